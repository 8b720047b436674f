#pragma once
// A frozen weight in GPTQ's integer grid, kept as the checkpoint packs it (quant/gptq_format.h, zeros as v2): the
// base of QLoRA on a hub "-GPTQ" or "-AWQ" model or on `qtune quantize --method gptq|awq|rtn` output (AWQ's layout
// is converted to this one when read: the same grid). Dequantized through kernels/dequant_gptq.h.
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/quantized_weight.h"

namespace qtune::quant {

class GptqWeight : public QuantizedWeight {
 public:
  // `method` names where the codes came from in format(): "gptq" or "awq".
  GptqWeight(GptqTensors tensors, IntGridOptions grid, std::string method = "gptq");
  at::Tensor dequantize(at::ScalarType dtype) const override;
  int64_t out_features() const override { return t_.qweight.size(1); }
  int64_t in_features() const override { return t_.g_idx.size(0); }
  std::string format() const override;  // "gptq-int4-g128", "gptq-int8-g-1", "awq-int4-g64"
  int64_t storage_bytes() const override;
  void to(at::Device device) override;
  at::Device device() const override { return t_.qweight.device(); }
  const GptqTensors& tensors() const { return t_; }
  const IntGridOptions& grid() const { return grid_; }

 private:
  GptqTensors t_;
  IntGridOptions grid_;
  std::string method_;
};

}  // namespace qtune::quant
