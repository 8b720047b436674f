#include "qtune/nn/quantized_linear.h"

#include "qtune/autograd/dequant_matmul.h"
#include "qtune/autograd/w8a8_matmul.h"
#include "qtune/quant/w8a8.h"
#include "qtune/util/error.h"

namespace qtune::nn {

QuantizedLinearImpl::QuantizedLinearImpl(LinearSpec spec, c10::intrusive_ptr<quant::QuantizedWeight> weight,
                                         at::Tensor bias)
    : LinearImpl(std::move(spec)), weight_(std::move(weight)) {
  if (weight_->out_features() != this->spec().out_features || weight_->in_features() != this->spec().in_features)
    fail("{}: quantized weight is [{}, {}] but the model expects [{}, {}]", this->spec().name, weight_->out_features(),
         weight_->in_features(), this->spec().out_features, this->spec().in_features);
  if (bias.defined()) bias_ = register_parameter("bias", std::move(bias), /*requires_grad=*/false);
}

at::Tensor QuantizedLinearImpl::forward(const at::Tensor& x) {
  // A W8A8 weight multiplies in integers with its input quantized per token (what its runtime computes); every other
  // format dequantizes into x's dtype.
  auto y = dynamic_cast<const quant::W8A8Weight*>(weight_.get()) ? autograd::w8a8_matmul(x, weight_)
                                                                 : autograd::dequant_matmul(x, weight_);
  return bias_.defined() ? y + bias_.to(y.scalar_type()) : y;
}

}  // namespace qtune::nn
