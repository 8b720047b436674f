#include "qtune/export/merged_model.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "qtune/export/compressed_tensors.h"
#include "qtune/export/merged_tensors.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/generation_config.h"
#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_writer.h"
#include "qtune/quant/bnb_format.h"
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/nf4.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"
#include "qtune/util/remove_tree.h"

namespace qtune::exporting {
namespace {

namespace fs = std::filesystem;

bool is_projection(const std::string& name) { return ends_with(name, "_proj.weight"); }

std::string dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

// Every projection (merged with its adapter) quantized per channel; everything else in o.dtype.
MergedExportResult save_merged_w8a8(nn::CausalLMImpl& model, const std::string& dir, const MergedExportOptions& o) {
  torch::NoGradGuard no_grad;
  W8A8CheckpointWriter writer(dir, {o.dtype, o.max_shard_bytes, o.source});
  bool has_lm_head = false;
  for (const auto& t : merged_tensors(model)) {
    if (t.projection_weight && is_projection(t.name)) {
      quant::W8A8State q;
      try {
        q = quant::quantize_w8a8_weight(t.value());
      } catch (const Error& e) {
        fail("{} (merged with its adapter): {}", t.name, e.what());
      }
      writer.add_linear(t.name.substr(0, t.name.size() - std::string(".weight").size()), q);
    } else {
      writer.add_dense(t.name, t.value());
    }
    has_lm_head = has_lm_head || t.name == "lm_head.weight";
  }
  auto config = model.config().to_json();
  if (has_lm_head) config["tie_word_embeddings"] = false;  // a tied lm_head trained apart (modules_to_save)
  const auto written = writer.finish(config);
  return {written.shards, written.tensors, written.bytes};
}

}  // namespace

MergedExportResult save_merged_model(nn::CausalLMImpl& model, const std::string& dir, const MergedExportOptions& o) {
  if (o.dtype != at::kFloat && o.dtype != at::kBFloat16 && o.dtype != at::kHalf)
    fail("merged export: dtype must be fp32, bf16 or fp16");
  if (fs::exists(dir)) fail("merged export: '{}' exists; choose a new directory (nothing was overwritten)", dir);
  if (int(o.quantize4.has_value()) + int(o.quantize_int.has_value()) + int(o.quantize_w8a8) > 1)
    fail("merged export: choose one quantization of the projections, not two");
  if (o.quantize_w8a8) return save_merged_w8a8(model, dir, o);
  std::optional<quant::GptqConfig> gptq;
  if (o.quantize_int) {
    gptq.emplace();
    gptq->grid.bits = o.quantize_int->bits;
    gptq->grid.group_size = o.quantize_int->group_size;
    gptq->grid.sym = o.quantize_int->symmetric;
    gptq->grid.validate("merged export (" + o.quantize_int->name() + ")");
    // gptqmodel refuses asymmetric v1 zero points from a writer it does not know: those go as gptq_v2 (issue 36 #19).
    gptq->checkpoint_format = quant::default_checkpoint_format(*gptq);
    if (!o.quantize_int->fp16_scales) fail("merged export: a GPTQ checkpoint stores fp16 scales, not fp32 ones");
  }
  const auto tmp = dir + ".tmp";
  remove_tree(tmp);
  fs::create_directories(tmp);
  torch::NoGradGuard no_grad;

  io::ShardedWriter writer(tmp, o.max_shard_bytes);
  bool has_lm_head = false;
  for (const auto& t : merged_tensors(model)) {
    auto w = t.value();
    if (o.quantize4 && t.projection_weight && is_projection(t.name)) {
      io::NamedTensors parts;
      quant::Quant4State q;
      try {
        q = quant::quantize_4bit(w, quant::four_bit_options(*o.quantize4));
      } catch (const Error& e) {
        fail("{} (merged with its adapter): {}", t.name, e.what());
      }
      quant::append_bnb_4bit(parts, t.name, q);
      for (const auto& [n, part] : parts) writer.add(n, part);
    } else if (gptq && t.projection_weight && is_projection(t.name)) {
      io::NamedTensors parts;
      quant::GptqTensors packed;
      try {
        packed = quant::pack_gptq(quant::int_codes(w, *o.quantize_int));
      } catch (const Error& e) {
        fail("{} (merged with its adapter): {}", t.name, e.what());
      }
      quant::append_gptq(parts, t.name.substr(0, t.name.size() - std::string(".weight").size()), packed,
                         gptq->grid.bits, gptq->checkpoint_format);
      for (const auto& [n, part] : parts) writer.add(n, part);
    } else {
      writer.add(t.name, w.to(o.dtype));
    }
    has_lm_head = has_lm_head || t.name == "lm_head.weight";
  }
  const auto written = writer.finish();
  MergedExportResult result{written.shards, written.tensors, written.bytes};

  auto config = model.config().to_json();
  config.erase("quantization_config");
  config["torch_dtype"] = dtype_name(o.dtype);
  // A tied model whose lm_head was trained apart (modules_to_save) is no longer tied.
  if (has_lm_head) config["tie_word_embeddings"] = false;
  if (o.quantize4)
    config["quantization_config"] = quant::bnb_quantization_config(*o.quantize4, false, dtype_name(o.dtype), {"lm_head"});
  if (gptq) config["quantization_config"] = gptq->to_json();
  io::write_text_atomically((fs::path(tmp) / "config.json").string(), config.dump(2) + "\n");
  io::write_generation_config(o.source, config, tmp);
  fs::rename(tmp, dir);
  return result;
}

}  // namespace qtune::exporting
