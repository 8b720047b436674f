#pragma once
// The LinearFactory of the frozen base: each projection becomes NF4/FP4 (Linear4bit), int8 (Linear8bit), W8A8 (int8
// weights and inputs; also a compressed-tensors checkpoint's), dense, GPTQ (a checkpoint that stores
// qweight/qzeros/scales/g_idx; AWQ's too, or with an unfused input scale in qtune's mixed checkpoint, which names each
// linear's method), or (keep, from a GGUF) the ggml blocks the file stores, as the QuantPlan says. A 16-bit checkpoint is quantized tensor by tensor straight from its memory map
// (the 16-bit copy of one weight at a time, never of the model); a checkpoint already quantized by qtune or by
// transformers + bitsandbytes is read as stored.
#include <string>
#include <vector>

#include "qtune/nn/linear.h"
#include "qtune/quant/quantized_weight.h"
#include "qtune/quant/quant_plan.h"
#include "qtune/quant/stored_quantization.h"

namespace qtune::nn {

struct QuantizedLayerInfo {
  std::string name;
  std::string format;   // nf4, fp4, int8, 16bit, gguf-q4_1 ...
  int64_t parameters = 0;
  int64_t storage_bytes = 0;
  bool from_checkpoint = false;  // read pre-quantized rather than quantized while loading
};

class QuantLinearFactory : public LinearFactory {
 public:
  // `stored`: what the checkpoint's quantization_config says; when it says anything, layers stored dense stay dense
  // and the plan is not applied.
  QuantLinearFactory(quant::QuantPlan plan, at::TensorOptions options, quant::StoredQuantization stored = {});
  Linear make(const LinearSpec& spec, const io::WeightSource& weights) override;
  const std::vector<QuantizedLayerInfo>& layers() const { return layers_; }
  double average_bits() const;  // over the layers built so far
  // "gguf-q4_1 x210, 16bit x2; 4.500 bits per weight" (over the layers built so far).
  std::string summary() const;

 private:
  Linear make_mixed(const LinearSpec& spec, const io::WeightSource& weights, at::Tensor bias, QuantizedLayerInfo info);
  Linear make_kept(const LinearSpec& spec, const io::WeightSource& weights, at::Tensor bias, QuantizedLayerInfo info);
  Linear dense(const LinearSpec& spec, at::Tensor weight, at::Tensor bias, QuantizedLayerInfo info);
  Linear quantized(const LinearSpec& spec, c10::intrusive_ptr<quant::QuantizedWeight> weight, at::Tensor bias,
                   QuantizedLayerInfo info);

  quant::QuantPlan plan_;
  at::TensorOptions options_;
  quant::StoredQuantization stored_;
  std::vector<QuantizedLayerInfo> layers_;
};

}  // namespace qtune::nn
