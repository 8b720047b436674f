#include "qtune/export/gguf_adapter.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

#include "qtune/io/gguf_model.h"
#include "qtune/io/gguf_writer.h"
#include "qtune/lora/inject.h"
#include "qtune/quant/gguf_quantize.h"
#include "qtune/util/error.h"

namespace qtune::exporting {
namespace {

using quant::GgmlType;

GgmlType adapter_type(const std::string& type) {
  if (type == "f32") return GgmlType::F32;
  if (type == "f16") return GgmlType::F16;
  if (type == "bf16") return GgmlType::BF16;
  if (type == "q8_0") return GgmlType::Q8_0;
  fail("GGUF adapter type '{}' is not one llama.cpp's converter writes (expected f32 | f16 | bf16 | q8_0)", type);
}

}  // namespace

GgufAdapterResult save_gguf_adapter(nn::CausalLMImpl& model, const std::string& path, const std::string& type,
                                    const std::string& name) {
  const auto wanted = adapter_type(type);
  const auto layers = lora::lora_layers(model);
  if (layers.empty()) fail("GGUF adapter export: the model has no LoRA layers (a train.mode: full run?)");
  for (const auto& p : lora::trainable_parameters(model))
    if (p.first.find("lora_") == std::string::npos)
      fail("GGUF adapter export: '{}' is trained as a whole (modules_to_save), which a llama.cpp LoRA adapter cannot "
           "carry; export the merged model with --gguf instead", p.first);
  const auto layout = io::gguf_layout(model.config());

  GgufAdapterResult result;
  // One alpha for all: scale·r must agree across modules, else fold.
  const double alpha = layers.front().second->scale() * static_cast<double>(layers.front().second->lora_A().size(0));
  for (const auto& layer : layers)
    if (const auto& l = layer.second; std::abs(l->scale() * static_cast<double>(l->lora_A().size(0)) - alpha) > 1e-6 * std::abs(alpha))
      result.scale_folded = true;
  result.alpha = result.scale_folded ? 0.0f : static_cast<float>(alpha);

  struct Pair {
    std::string name;
    at::Tensor value;
  };
  std::vector<Pair> tensors;
  std::vector<io::GgufTensorDecl> decls;
  torch::NoGradGuard no_grad;
  for (const auto& [module, l] : layers) {
    const auto base = layout.gguf_name(module + ".weight");
    if (base.empty()) fail("GGUF adapter export: llama.cpp has no tensor for '{}'", module);
    auto a = l->lora_A().detach().to(at::kCPU).to(at::kFloat).contiguous();
    auto b = l->lora_B().detach().to(at::kCPU).to(at::kFloat);
    if (result.scale_folded) b = b * l->scale();
    // B's rows are the weight's rows: they move as the base weight's do.
    if (const auto heads = layout.rotary_heads(module + ".weight"))
      b = io::permute_rotary_rows(b, heads);
    tensors.push_back({base + ".lora_a", a});
    tensors.push_back({base + ".lora_b", b.contiguous()});
    ++result.modules;
  }
  for (const auto& t : tensors) {
    // A rank or width that is not whole Q8_0 blocks stays f16, as the converter would fail otherwise.
    auto type_of = (wanted == GgmlType::Q8_0 && t.value.size(1) % 32 != 0) ? GgmlType::F16 : wanted;
    decls.push_back({t.name, t.value.sizes().vec(), type_of});
  }

  io::GgufMetadata m;
  m.set_string("general.architecture", layout.architecture);
  m.set_string("general.type", "adapter");
  if (!name.empty()) m.set_string("general.name", name);
  m.set_string("adapter.type", "lora");
  m.set_f32("adapter.lora.alpha", result.alpha);
  io::GgufWriter writer(path, m, decls);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto bytes = quant::quantize_ggml(decls[i].type, tensors[i].value, {});
    writer.write(decls[i].name, bytes.data_ptr<uint8_t>(), static_cast<uint64_t>(bytes.numel()));
    ++result.tensors;
  }
  result.bytes = writer.finish();
  return result;
}

}  // namespace qtune::exporting
