#include "qtune/quant/quantized_weight.h"

#include "qtune/kernels/dequant.h"
#include "qtune/kernels/dequant_int8.h"
#include "qtune/util/error.h"

namespace qtune::quant {
namespace {

int64_t bytes_of(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

}  // namespace

Quant4Weight::Quant4Weight(Quant4State state) : state_(std::move(state)) {
  if (state_.shape.size() != 2) fail("a 4-bit linear weight must be 2-D, got {} dims", state_.shape.size());
  state_.validate("4-bit weight");
}

at::Tensor Quant4Weight::dequantize(at::ScalarType dtype) const {
  // bitsandbytes dequantizes into the dtype the weight had when quantized (QuantState.dtype), then casts to the
  // compute dtype: a bf16-quantized weight used in fp32 carries bf16 rounding, in transformers and here.
  if (state_.dtype != dtype && (state_.dtype == at::kBFloat16 || state_.dtype == at::kHalf))
    return kernels::dequantize_4bit(state_, state_.dtype).to(dtype);
  return kernels::dequantize_4bit(state_, dtype);
}

int64_t Quant4Weight::storage_bytes() const {
  int64_t bytes = bytes_of(state_.packed) + bytes_of(state_.absmax);
  if (state_.nested) bytes += bytes_of(state_.nested->codes) + bytes_of(state_.nested->absmax) + 4;
  return bytes;
}

void Quant4Weight::to(at::Device device) { state_ = state_.to(device); }

Int8Weight::Int8Weight(Int8State state) : state_(std::move(state)) { state_.validate("int8 weight"); }

at::Tensor Int8Weight::dequantize(at::ScalarType dtype) const { return kernels::dequantize_int8(state_, dtype); }

int64_t Int8Weight::storage_bytes() const { return bytes_of(state_.codes) + bytes_of(state_.row_absmax); }

void Int8Weight::to(at::Device device) {
  state_.codes = state_.codes.to(device);
  state_.row_absmax = state_.row_absmax.to(device);
}

}  // namespace qtune::quant
