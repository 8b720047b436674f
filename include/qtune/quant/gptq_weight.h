#pragma once
// A frozen weight in GPTQ's integer grid, kept as the checkpoint packs it (quant/gptq_format.h, zeros as v2): the
// base of QLoRA on a hub "-GPTQ" or "-AWQ" model or on `qtune quantize --method gptq|awq|rtn` output (AWQ's layout
// is converted to this one when read: the same grid). Dequantized through kernels/dequant_gptq.h.
// AWQ unfused (qtune's own mixed checkpoint, where q/k/v or gate/up may each choose another method, so AWQ's
// per-input-channel scale s cannot fold into the norm before them): the codes are Q(W·diag s), and the weight is
// Q(W·diag s)·diag(1/s), s kept in fp32 beside the codes and divided out when dequantizing.
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/quantized_weight.h"

namespace qtune::quant {

class GptqWeight : public QuantizedWeight {
 public:
  // `method` names where the codes came from in format(): "gptq" or "awq".
  // `input_scale`: fp32 [in] (AWQ unfused), or undefined.
  GptqWeight(GptqTensors tensors, IntGridOptions grid, std::string method = "gptq", at::Tensor input_scale = {});
  at::Tensor dequantize(at::ScalarType dtype) const override;
  int64_t out_features() const override { return t_.qweight.size(1); }
  int64_t in_features() const override { return t_.g_idx.size(0); }
  std::string format() const override;  // "gptq-int4-g128", "gptq-int8-g-1", "awq-int4-g64"
  int64_t storage_bytes() const override;
  void to(at::Device device) override;
  at::Device device() const override { return t_.qweight.device(); }
  const GptqTensors& tensors() const { return t_; }
  const IntGridOptions& grid() const { return grid_; }
  const at::Tensor& input_scale() const { return input_scale_; }

 private:
  GptqTensors t_;
  IntGridOptions grid_;
  std::string method_;
  at::Tensor input_scale_;
};

}  // namespace qtune::quant
