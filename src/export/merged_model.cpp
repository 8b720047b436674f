#include "qtune/export/merged_model.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "qtune/io/atomic_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/lora/lora_linear.h"
#include "qtune/quant/bnb_format.h"
#include "qtune/quant/nf4.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"
#include "qtune/util/remove_tree.h"

namespace qtune::exporting {
namespace {

namespace fs = std::filesystem;
using Emit = std::function<void(const std::string&, const at::Tensor&)>;

bool is_projection(const std::string& name) { return ends_with(name, "_proj"); }

// Walks the model in module order, handing out one exported tensor at a time (HF names).
void visit(torch::nn::Module& module, const std::string& path, const MergedExportOptions& o, const Emit& emit) {
  const std::string prefix = path.empty() ? "" : path + ".";
  if (auto* linear = dynamic_cast<nn::LinearImpl*>(&module)) {
    auto* lora = dynamic_cast<lora::LoraLinearImpl*>(linear);
    auto w = lora ? lora->merged_weight() : linear->dense_weight().to(at::kFloat);
    if (o.quantize_nf4 && is_projection(path)) {
      io::NamedTensors parts;
      quant::Quant4State q;
      try {
        q = quant::quantize_4bit(w, quant::Quantize4Options{});
      } catch (const Error& e) {
        fail("{}weight (merged with its adapter): {}", prefix, e.what());
      }
      quant::append_bnb_4bit(parts, prefix + "weight", q);
      for (const auto& [n, t] : parts) emit(n, t);
    } else {
      emit(prefix + "weight", w.to(o.dtype));
    }
    if (auto b = linear->bias(); b.defined()) emit(prefix + "bias", b.detach().to(o.dtype));
    return;
  }
  for (const auto& p : module.named_parameters(/*recurse=*/false))
    emit(prefix + p.key(), p.value().detach().to(o.dtype));
  for (const auto& child : module.named_children()) visit(*child.value(), prefix + child.key(), o, emit);
}

std::string dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

}  // namespace

MergedExportResult save_merged_model(nn::CausalLMImpl& model, const std::string& dir, const MergedExportOptions& o) {
  if (o.dtype != at::kFloat && o.dtype != at::kBFloat16 && o.dtype != at::kHalf)
    fail("merged export: dtype must be fp32, bf16 or fp16");
  if (fs::exists(dir)) fail("merged export: '{}' exists; choose a new directory (nothing was overwritten)", dir);
  const auto tmp = dir + ".tmp";
  remove_tree(tmp);
  fs::create_directories(tmp);
  torch::NoGradGuard no_grad;

  MergedExportResult result;
  std::vector<std::pair<std::string, std::vector<std::string>>> shards;  // temp file, tensor names
  io::NamedTensors pending;
  int64_t pending_bytes = 0;
  bool has_lm_head = false;
  auto flush = [&] {
    if (pending.empty()) return;
    const auto file = fmt::format("shard-{}.tmp.safetensors", shards.size());
    std::vector<std::string> names;
    for (const auto& [n, t] : pending) names.push_back(n);
    io::write_safetensors((fs::path(tmp) / file).string(), pending, {{"format", "pt"}});
    shards.emplace_back(file, std::move(names));
    pending.clear();
    pending_bytes = 0;
  };
  visit(model, "", o, [&](const std::string& name, const at::Tensor& t) {
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (pending_bytes > 0 && pending_bytes + bytes > o.max_shard_bytes) flush();
    pending.emplace_back(name, t.contiguous());
    pending_bytes += bytes;
    result.bytes += bytes;
    ++result.tensors;
    has_lm_head = has_lm_head || name == "lm_head.weight";
  });
  flush();

  // Final names once the count is known, and the index transformers reads for a sharded checkpoint.
  result.shards = static_cast<int64_t>(shards.size());
  nlohmann::ordered_json index;
  index["metadata"]["total_size"] = result.bytes;
  for (size_t i = 0; i < shards.size(); ++i) {
    const auto name = shards.size() == 1 ? std::string("model.safetensors")
                                         : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    fs::rename(fs::path(tmp) / shards[i].first, fs::path(tmp) / name);
    for (const auto& t : shards[i].second) index["weight_map"][t] = name;
  }
  if (shards.size() > 1) io::write_text_atomically((fs::path(tmp) / "model.safetensors.index.json").string(), index.dump(2) + "\n");

  auto config = model.config().to_json();
  config.erase("quantization_config");
  config["torch_dtype"] = dtype_name(o.dtype);
  // A tied model whose lm_head was trained apart (modules_to_save) is no longer tied.
  if (has_lm_head) config["tie_word_embeddings"] = false;
  if (o.quantize_nf4)
    config["quantization_config"] = quant::bnb_quantization_config(quant::LayerQuant{}, false, dtype_name(o.dtype), {"lm_head"});
  io::write_text_atomically((fs::path(tmp) / "config.json").string(), config.dump(2) + "\n");
  nlohmann::json gen = {{"bos_token_id", config["bos_token_id"]}, {"eos_token_id", config["eos_token_id"]}};
  io::write_text_atomically((fs::path(tmp) / "generation_config.json").string(), gen.dump(2) + "\n");
  fs::rename(tmp, dir);
  return result;
}

}  // namespace qtune::exporting
