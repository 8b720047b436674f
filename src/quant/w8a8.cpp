#include "qtune/quant/w8a8.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "qtune/util/error.h"

namespace qtune::quant {

void W8A8State::validate(const std::string& what) const {
  validate_int8_codes(codes, what);
  if (!scale.defined()) fail("{}: missing per-channel scales", what);
  if (scale.scalar_type() != at::kFloat)
    fail("{}: scales must be fp32 (Float), got {}", what, c10::toString(scale.scalar_type()));
  if (scale.dim() != 1 || scale.size(0) != codes.size(0))
    fail("{}: scales must hold one value per output channel ({}), got shape [{}]", what, codes.size(0),
         fmt::join(scale.sizes(), ", "));
  if (scale.device() != codes.device())
    fail("{}: scales are on {} but the codes are on {}", what, scale.device().str(), codes.device().str());
  if (!scale.is_contiguous()) fail("{}: scales must be contiguous", what);
}

at::Tensor W8A8State::dequantize(at::ScalarType dtype) const {
  return (codes.to(at::kFloat) * scale.unsqueeze(1)).to(dtype);
}

W8A8State quantize_w8a8_weight(const at::Tensor& weight) {
  constexpr const char* what = "quantize_w8a8_weight";
  if (!weight.defined()) fail("{}: weight is undefined", what);
  if (weight.dim() != 2) fail("{}: weight must be 2-D [out, in], got shape [{}]", what, fmt::join(weight.sizes(), ", "));
  const auto type = weight.scalar_type();
  if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf)
    fail("{}: weight must be fp32, bf16 or fp16, got {}", what, c10::toString(type));
  if (weight.size(1) == 0 && weight.size(0) > 0) fail("{}: weight rows are empty (shape [{}, 0])", what, weight.size(0));
  const auto w = weight.detach().to(at::kFloat);
  // A non-finite value would make its whole row's scale inf and every other code 0.
  const auto bad_rows = at::logical_not(at::isfinite(w)).any(1);
  if (bad_rows.any().item<bool>())
    fail("{}: weight row {} holds a non-finite value (inf or NaN)", what, bad_rows.nonzero()[0][0].item<int64_t>());
  W8A8State s;
  s.scale = (w.abs().amax(1) / kInt8Max).contiguous();
  // A zero row divides 0 by 0: its codes are defined as 0 (any code times scale 0 is the row it came from).
  const auto divisor = at::where(s.scale.gt(0), s.scale, at::ones_like(s.scale)).unsqueeze(1);
  // |w / scale| <= 127 up to the scale's rounding, which cannot carry a code past 127 once rounded; the clamp says so.
  s.codes = at::round(w / divisor).clamp(-kInt8Max, kInt8Max).to(at::kChar).contiguous();
  return s;
}

W8A8Weight::W8A8Weight(W8A8State state) : state_(std::move(state)) { state_.validate("w8a8 weight"); }

int64_t W8A8Weight::storage_bytes() const {
  return state_.codes.numel() * state_.codes.element_size() + state_.scale.numel() * state_.scale.element_size();
}

void W8A8Weight::to(at::Device device) {
  state_.codes = state_.codes.to(device);
  state_.scale = state_.scale.to(device);
}

}  // namespace qtune::quant
