#include "random_model.h"

#include "qtune/util/memory.h"

#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/codebook.h"
#include "qtune/quant/int8.h"
#include "qtune/quant/nf4.h"
#include "qtune/quant/w8a8.h"
#include "qtune/util/error.h"

namespace qtune::cli {
namespace {

constexpr double kWeightStd = 0.02;

// Projections as random stored codes on the target device; nothing dense is ever made for them.
class RandomCodesFactory : public nn::LinearFactory {
 public:
  // format: "nf4", "int8" or "w8a8"
  RandomCodesFactory(std::string format, at::TensorOptions options) : format_(std::move(format)), options_(options) {}

  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& /*weights: none are read*/) override {
    const auto dev = at::TensorOptions().device(options_.device());
    const int64_t n = spec.out_features * spec.in_features;
    c10::intrusive_ptr<quant::QuantizedWeight> w;
    if (format_ == "int8") {
      quant::Int8State s{at::randint(-127, 128, {spec.out_features, spec.in_features}, dev.dtype(at::kChar)),
                         at::full({spec.out_features}, 3 * kWeightStd * 127, dev.dtype(at::kFloat))};
      w = c10::make_intrusive<quant::Int8Weight>(std::move(s));
    } else if (format_ == "w8a8") {
      quant::W8A8State s{at::randint(-127, 128, {spec.out_features, spec.in_features}, dev.dtype(at::kChar)),
                         at::full({spec.out_features}, 3 * kWeightStd / 127, dev.dtype(at::kFloat))};
      w = c10::make_intrusive<quant::W8A8Weight>(std::move(s));
    } else {
      quant::Quant4State s;
      s.format = quant::Format4::NF4;
      s.blocksize = 64;
      s.shape = {spec.out_features, spec.in_features};
      s.dtype = options_.dtype().toScalarType();
      const auto& book = quant::codebook(quant::Format4::NF4);
      s.code = at::tensor(std::vector<float>(book.begin(), book.end())).to(options_.device());
      s.packed = at::randint(256, {(n + 1) / 2, 1}, dev.dtype(at::kByte));
      // Double quantization as QLoRA stores it: 8-bit codes of (absmax - offset) in blocks of 256. The absmaxes of
      // a 0.02-std weight lie near 3 std; the codes spread them by +-10%.
      quant::NestedAbsmax nested;
      nested.codes = at::randint(256, {s.blocks()}, dev.dtype(at::kByte));
      nested.map = quant::dynamic_map_signed().to(options_.device());
      nested.absmax = at::full({(s.blocks() + 255) / 256}, 0.3 * kWeightStd, dev.dtype(at::kFloat));
      nested.blocksize = 256;
      nested.offset = static_cast<float>(3 * kWeightStd);
      s.nested = nested;
      w = c10::make_intrusive<quant::Quant4Weight>(std::move(s));
    }
    at::Tensor bias;
    if (spec.bias) bias = at::zeros({spec.out_features}, options_);
    return std::make_shared<nn::QuantizedLinearImpl>(spec, std::move(w), std::move(bias));
  }

 private:
  std::string format_;
  at::TensorOptions options_;
};

}  // namespace

RandomModel random_model(const io::ModelConfig& config, const std::string& base, at::TensorOptions options,
                         const lora::LoraConfig* lora, uint64_t seed) {
  RandomModel m;
  if (base == "nf4" || base == "int8" || base == "w8a8")
    m.base = std::make_unique<RandomCodesFactory>(base, options);
  else if (base == "dense")
    m.base = std::make_unique<nn::DenseLinearFactory>(options);
  else
    fail("--base '{}': expected nf4, int8, w8a8 or dense", base);
  nn::LinearFactory* factory = m.base.get();
  if (lora) {
    m.lora = std::make_unique<lora::LoraLinearFactory>(*m.base, *lora, seed);
    factory = m.lora.get();
  }
  nn::RandomInit init(config, seed);  // embeddings, norms, a dense base: fp32 on the CPU, then moved
  m.model = std::make_shared<nn::CausalLMImpl>(config, *factory, init, options);
  release_free_heap();  // the random fp32 weights quantized away, as after a load
  return m;
}

RandomModel loaded_model(const std::string& path, const std::string& base, at::TensorOptions options,
                         const lora::LoraConfig* lora, uint64_t seed) {
  quant::QuantPlan plan;  // block 64 with double quant by default, as QLoRA stores NF4
  plan.base.format = base == "dense" ? quant::WeightFormat::Dense : quant::parse_weight_format(base, "--base");
  const auto config = io::ModelConfig::load(path);
  RandomModel m;
  m.base = std::make_unique<nn::QuantLinearFactory>(
      plan, options, quant::StoredQuantization::of(config.quantization_config, path + "/config.json"));
  nn::LinearFactory* factory = m.base.get();
  if (lora) {
    m.lora = std::make_unique<lora::LoraLinearFactory>(*m.base, *lora, seed);
    factory = m.lora.get();
  }
  m.model = nn::load_causal_lm(path, options, factory);
  return m;
}

}  // namespace qtune::cli
