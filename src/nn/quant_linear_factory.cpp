#include "qtune/nn/quant_linear_factory.h"

#include <fmt/format.h>

#include <algorithm>

#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/bnb_format.h"
#include "qtune/quant/compressed_tensors_format.h"
#include "qtune/quant/ggml_weight.h"
#include "qtune/quant/gguf_blocks.h"
#include "qtune/quant/gptq_weight.h"
#include "qtune/quant/nf4.h"
#include "qtune/quant/qtune_mixed_format.h"
#include "qtune/quant/w8a8.h"
#include "qtune/util/error.h"

namespace qtune::nn {
namespace {

bool plain_ggml_type(quant::GgmlType t) {
  return t == quant::GgmlType::F32 || t == quant::GgmlType::F16 || t == quant::GgmlType::BF16;
}

}  // namespace

QuantLinearFactory::QuantLinearFactory(quant::QuantPlan plan, at::TensorOptions options, quant::StoredQuantization stored)
    : plan_(std::move(plan)), options_(options), stored_(std::move(stored)) {
  plan_.validate("quantization plan");
}

Linear QuantLinearFactory::make(const LinearSpec& spec, const io::WeightSource& weights) {
  const std::string weight_name = spec.name + ".weight";
  at::Tensor bias;
  if (spec.bias) bias = load_frozen(weights, spec.name + ".bias", {spec.out_features}, options_);
  QuantizedLayerInfo info{spec.name, "", spec.in_features * spec.out_features, 0, false};

  c10::intrusive_ptr<quant::QuantizedWeight> qweight;
  if (stored_.qtune) return make_mixed(spec, weights, std::move(bias), info);
  if (stored_.compressed) {
    // The config and the tensors must agree: a scale the config does not ask for would otherwise be dropped, and int8
    // codes read as a dense weight.
    const bool quantized = stored_.compressed->quantizes(spec.name);
    if (!quantized && quant::has_compressed_w8a8(weights, spec.name))
      fail("{}: stores int8 codes and scales, but {}'s quantization_config (targets minus ignore) leaves {} unquantized",
           weights.origin(spec.name + ".weight_scale"), stored_.where, spec.name);
    if (!quantized)
      return dense(spec, load_frozen(weights, weight_name, {spec.out_features, spec.in_features}, options_),
                   std::move(bias), info);
    qweight = c10::make_intrusive<quant::W8A8Weight>(
        quant::read_compressed_w8a8(weights, spec.name, spec.out_features, spec.in_features, stored_.where));
    info.from_checkpoint = true;
  } else if (stored_.awq && quant::has_gptq(weights, spec.name)) {  // AWQ also names its words .qweight
    qweight = c10::make_intrusive<quant::GptqWeight>(
        quant::awq_to_gptq(quant::read_awq(weights, spec.name, spec.out_features, spec.in_features, *stored_.awq),
                           stored_.awq->grid),
        stored_.awq->grid, "awq");
    info.from_checkpoint = true;
  } else if (quant::has_gptq(weights, spec.name)) {
    if (!stored_.gptq)
      fail("{}.qweight: the checkpoint stores GPTQ tensors but its config.json has no quantization_config with "
           "quant_method \"gptq\" (bits, group_size and checkpoint_format are needed to read them)",
           spec.name);
    const auto grid = stored_.gptq->grid_for(spec.name);
    if (!grid)
      fail("{}.qweight: the checkpoint stores GPTQ tensors for a module its quantization_config.dynamic leaves "
           "unquantized (a \"-:\" rule matches it)", spec.name);
    qweight = c10::make_intrusive<quant::GptqWeight>(
        quant::read_gptq(weights, spec.name, spec.out_features, spec.in_features, *grid, *stored_.gptq), *grid);
    info.from_checkpoint = true;
  } else if (quant::has_compressed_w8a8(weights, spec.name)) {
    fail("{}: the checkpoint stores compressed-tensors W8A8 tensors (int8 codes and weight_scale) but {} has no "
         "quantization_config with quant_method \"compressed-tensors\" (llm-compressor writes one)",
         weights.origin(spec.name + ".weight_scale"), stored_.where.empty() ? "its config.json" : stored_.where);
  } else if (!quant::bnb_4bit_state_key(weights, weight_name).empty()) {
    qweight = c10::make_intrusive<quant::Quant4Weight>(quant::read_bnb_4bit(weights, weight_name));
    info.from_checkpoint = true;
  } else if (quant::has_bnb_int8(weights, spec.name)) {
    qweight = c10::make_intrusive<quant::Int8Weight>(quant::read_bnb_int8(weights, spec.name));
    info.from_checkpoint = true;
  } else {
    const auto layer = stored_.any() ? quant::LayerQuant{quant::WeightFormat::Dense} : plan_.resolve(spec.name);
    if (layer.format == quant::WeightFormat::Keep) return make_kept(spec, weights, std::move(bias), info);
    if (layer.format == quant::WeightFormat::Dense)
      return dense(spec, load_frozen(weights, weight_name, {spec.out_features, spec.in_features}, options_),
                   std::move(bias), info);
    // The memory-mapped 16-bit weight is read here and dropped as soon as its quantized state exists.
    auto w = weights.get(weight_name, {spec.out_features, spec.in_features});
    try {
      if (layer.format == quant::WeightFormat::Int8)
        qweight = c10::make_intrusive<quant::Int8Weight>(quant::quantize_int8_rowwise(w.to(at::kFloat)));
      else if (layer.format == quant::WeightFormat::W8A8)
        qweight = c10::make_intrusive<quant::W8A8Weight>(quant::quantize_w8a8_weight(w));
      else
        qweight = c10::make_intrusive<quant::Quant4Weight>(quant::quantize_4bit(w, quant::four_bit_options(layer)));
    } catch (const Error& e) {
      fail("{}: {}", weight_name, e.what());
    }
    w.reset();
    weights.release(weight_name);
  }
  return quantized(spec, std::move(qweight), std::move(bias), info);
}

// qtune's mixed checkpoint: each linear as its config names it, in that store's tensors; tensors that say otherwise
// are refused rather than read as what they are not.
Linear QuantLinearFactory::make_mixed(const LinearSpec& spec, const io::WeightSource& weights, at::Tensor bias,
                                      QuantizedLayerInfo info) {
  const auto& mixed = *stored_.qtune;
  const auto& method = mixed.method_of(spec.name, stored_.where);
  const auto found = quant::stored_linear(weights, spec.name);
  if (found.method.empty())
    fail("{}: {} is {} by {}'s quantization_config.linears, but the checkpoint stores no tensor of it",
         weights.origin(found.tensor), spec.name, method, stored_.where);
  if (found.method != method)
    fail("{}: says {} is stored as {}, but {}'s quantization_config.linears names it {}", weights.origin(found.tensor),
         spec.name, found.method, stored_.where, method);
  c10::intrusive_ptr<quant::QuantizedWeight> qweight;
  if (method == "16bit")
    return dense(spec, load_frozen(weights, spec.name + ".weight", {spec.out_features, spec.in_features}, options_),
                 std::move(bias), info);
  if (method == "nf4") {
    auto state = quant::read_bnb_4bit(weights, spec.name + ".weight");
    if (state.format != quant::Format4::NF4)
      fail("{}: stores FP4 codes, but {}'s quantization_config.linears names {} nf4", weights.origin(found.tensor),
           stored_.where, spec.name);
    qweight = c10::make_intrusive<quant::Quant4Weight>(std::move(state));
  } else if (method == "int8") {
    qweight = c10::make_intrusive<quant::Int8Weight>(quant::read_bnb_int8(weights, spec.name));
  } else {  // gptq, awq: GPTQ's tensors on the config's grid, AWQ's with its input scale
    const bool awq = method == "awq";
    const auto& config = awq ? mixed.awq : mixed.gptq;
    if (!config) fail("{}: quantization_config.{} is missing (the grid of {})", stored_.where, method, spec.name);
    at::Tensor input_scale;
    if (awq) {
      input_scale = weights.get(spec.name + quant::kAwqInputScale, {spec.in_features});
      if (input_scale.scalar_type() != at::kFloat)
        fail("{}: must be F32 (AWQ's input scale, divided out exactly), got {}",
             weights.origin(spec.name + quant::kAwqInputScale), c10::toString(input_scale.scalar_type()));
    }
    qweight = c10::make_intrusive<quant::GptqWeight>(
        quant::read_gptq(weights, spec.name, spec.out_features, spec.in_features, config->grid, *config),
        config->grid, method, input_scale);
  }
  info.from_checkpoint = true;
  return quantized(spec, std::move(qweight), std::move(bias), info);
}

Linear QuantLinearFactory::make_kept(const LinearSpec& spec, const io::WeightSource& weights, at::Tensor bias,
                                     QuantizedLayerInfo info) {
  const std::string weight_name = spec.name + ".weight";
  auto stored = weights.stored_blocks(weight_name);
  if (!stored)
    fail("{}: quant.format keep needs a GGUF base (a .gguf file as model.path), but this checkpoint does not store the "
         "weight as ggml blocks; use nf4, fp4, int8, w8a8 or none for it",
         weight_name);
  const std::vector<int64_t> shape{spec.out_features, spec.in_features};
  if (stored->shape != shape)
    fail("{} has shape {}x{} but the model expects {}x{} for {}", stored->origin, stored->shape.at(0),
         stored->shape.at(1), shape[0], shape[1], weight_name);
  if (plain_ggml_type(stored->type)) {
    // Nothing to keep: a float tensor becomes a dense layer in the compute dtype, as the 16-bit path makes it.
    auto w = quant::dequantize_ggml(stored->type, stored->bytes.data_ptr<uint8_t>(), spec.out_features * spec.in_features)
                 .view(shape)
                 .to(options_)
                 .set_requires_grad(false);
    stored.reset();
    weights.release(weight_name);
    return dense(spec, std::move(w), std::move(bias), info);
  }
  if (!quant::ggml_weight_supports(stored->type))
    fail("{} is stored as {}, which quant.format keep cannot hold (it keeps Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, "
         "Q4_K, Q5_K, Q6_K); send {} to nf4, int8 or 16bit with quant.keep_int8 / quant.keep_16bit",
         stored->origin, quant::ggml_type_info(stored->type).name, spec.name);
  auto qweight = c10::make_intrusive<quant::GgmlWeight>(stored->type, std::move(stored->bytes), spec.in_features);
  weights.release(weight_name);
  info.from_checkpoint = true;
  return quantized(spec, std::move(qweight), std::move(bias), info);
}

Linear QuantLinearFactory::dense(const LinearSpec& spec, at::Tensor weight, at::Tensor bias, QuantizedLayerInfo info) {
  info.format = "16bit";
  info.storage_bytes = weight.numel() * weight.element_size();
  layers_.push_back(info);
  return std::make_shared<DenseLinearImpl>(spec, std::move(weight), std::move(bias));
}

Linear QuantLinearFactory::quantized(const LinearSpec& spec, c10::intrusive_ptr<quant::QuantizedWeight> weight,
                                     at::Tensor bias, QuantizedLayerInfo info) {
  weight->to(options_.device());
  info.format = weight->format();
  info.storage_bytes = weight->storage_bytes();
  layers_.push_back(info);
  return std::make_shared<QuantizedLinearImpl>(spec, std::move(weight), std::move(bias));
}

double QuantLinearFactory::average_bits() const {
  double bits = 0, params = 0;
  for (const auto& l : layers_) {
    bits += 8.0 * static_cast<double>(l.storage_bytes);
    params += static_cast<double>(l.parameters);
  }
  return params > 0 ? bits / params : 0.0;
}

std::string QuantLinearFactory::summary() const {
  std::vector<std::pair<std::string, int64_t>> counts;  // in the order the formats first appear
  for (const auto& l : layers_) {
    auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == l.format; });
    if (it == counts.end()) counts.emplace_back(l.format, 1);
    else ++it->second;
  }
  std::string out;
  for (const auto& [format, n] : counts) out += fmt::format("{}{} x{}", out.empty() ? "" : ", ", format, n);
  return fmt::format("{}; {:.3f} bits per weight", out.empty() ? "no linears" : out, average_bits());
}

}  // namespace qtune::nn
