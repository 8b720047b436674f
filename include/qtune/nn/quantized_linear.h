#pragma once
// A frozen linear whose weight is stored quantized (Linear4bit for NF4/FP4, Linear8bit for int8): the forward
// goes through DequantMatmul (W8A8: W8A8Matmul), so no dense weight outlives the matmul, in forward or backward.
#include <ATen/ATen.h>

#include "qtune/nn/linear.h"
#include "qtune/quant/quantized_weight.h"

namespace qtune::nn {

class QuantizedLinearImpl : public LinearImpl {
 public:
  QuantizedLinearImpl(LinearSpec spec, c10::intrusive_ptr<quant::QuantizedWeight> weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor dense_weight() const override { return weight_->dequantize(at::kFloat); }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_->device(); }
  const quant::QuantizedWeight& weight() const { return *weight_; }
  const c10::intrusive_ptr<quant::QuantizedWeight>& weight_handle() const { return weight_; }

 private:
  c10::intrusive_ptr<quant::QuantizedWeight> weight_;
  at::Tensor bias_;
};

}  // namespace qtune::nn
