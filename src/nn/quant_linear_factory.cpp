#include "qtune/nn/quant_linear_factory.h"

#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/bnb_format.h"
#include "qtune/quant/nf4.h"
#include "qtune/util/error.h"

namespace qtune::nn {

QuantLinearFactory::QuantLinearFactory(quant::QuantPlan plan, at::TensorOptions options, bool prequantized)
    : plan_(std::move(plan)), options_(options), prequantized_(prequantized) {
  plan_.validate("quantization plan");
}

Linear QuantLinearFactory::make(const LinearSpec& spec, const io::WeightSource& weights) {
  const std::string weight_name = spec.name + ".weight";
  at::Tensor bias;
  if (spec.bias) bias = load_frozen(weights, spec.name + ".bias", {spec.out_features}, options_);
  QuantizedLayerInfo info{spec.name, "", spec.in_features * spec.out_features, 0, false};

  c10::intrusive_ptr<quant::QuantizedWeight> qweight;
  if (!quant::bnb_4bit_state_key(weights, weight_name).empty()) {
    qweight = c10::make_intrusive<quant::Quant4Weight>(quant::read_bnb_4bit(weights, weight_name));
    info.from_checkpoint = true;
  } else if (quant::has_bnb_int8(weights, spec.name)) {
    qweight = c10::make_intrusive<quant::Int8Weight>(quant::read_bnb_int8(weights, spec.name));
    info.from_checkpoint = true;
  } else {
    const auto layer = prequantized_ ? quant::LayerQuant{quant::WeightFormat::Dense} : plan_.resolve(spec.name);
    if (layer.format == quant::WeightFormat::Dense) {
      auto w = load_frozen(weights, weight_name, {spec.out_features, spec.in_features}, options_);
      info.format = "16bit";
      info.storage_bytes = w.numel() * w.element_size();
      layers_.push_back(info);
      return std::make_shared<DenseLinearImpl>(spec, std::move(w), std::move(bias));
    }
    // The memory-mapped 16-bit weight is read here and dropped as soon as its quantized state exists.
    auto w = weights.get(weight_name, {spec.out_features, spec.in_features});
    try {
      if (layer.format == quant::WeightFormat::Int8)
        qweight = c10::make_intrusive<quant::Int8Weight>(quant::quantize_int8_rowwise(w.to(at::kFloat)));
      else
        qweight = c10::make_intrusive<quant::Quant4Weight>(quant::quantize_4bit(
            w, {layer.format == quant::WeightFormat::NF4 ? quant::Format4::NF4 : quant::Format4::FP4, layer.blocksize,
                layer.double_quant}));
    } catch (const Error& e) {
      fail("{}: {}", weight_name, e.what());
    }
    w.reset();
    weights.release(weight_name);
  }
  qweight->to(options_.device());
  info.format = qweight->format();
  info.storage_bytes = qweight->storage_bytes();
  layers_.push_back(info);
  return std::make_shared<QuantizedLinearImpl>(spec, std::move(qweight), std::move(bias));
}

double QuantLinearFactory::average_bits() const {
  double bits = 0, params = 0;
  for (const auto& l : layers_) {
    bits += 8.0 * static_cast<double>(l.storage_bytes);
    params += static_cast<double>(l.parameters);
  }
  return params > 0 ? bits / params : 0.0;
}

}  // namespace qtune::nn
