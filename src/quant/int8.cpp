#include "qtune/quant/int8.h"

#include <fmt/format.h>

#include "qtune/util/error.h"

namespace qtune::quant {

void validate_int8_codes(const at::Tensor& codes, const std::string& what) {
  if (!codes.defined()) fail("{}: missing int8 codes", what);
  if (codes.scalar_type() != at::kChar) fail("{}: codes must be int8, got {}", what, c10::toString(codes.scalar_type()));
  if (codes.dim() != 2) fail("{}: codes must be 2-D [out, in], got shape [{}]", what, fmt::join(codes.sizes(), ", "));
  if (!codes.is_contiguous()) fail("{}: codes must be contiguous", what);
}

void Int8State::validate(const std::string& what) const {
  validate_int8_codes(codes, what);
  if (!row_absmax.defined()) fail("{}: missing row absmax", what);
  if (row_absmax.scalar_type() != at::kFloat)
    fail("{}: row absmax must be fp32 (Float), got {}", what, c10::toString(row_absmax.scalar_type()));
  if (row_absmax.dim() != 1 || row_absmax.size(0) != codes.size(0))
    fail("{}: row absmax must hold one value per row ({} rows), got shape [{}]", what, codes.size(0),
         fmt::join(row_absmax.sizes(), ", "));
  if (row_absmax.device() != codes.device())
    fail("{}: row absmax is on {} but the codes are on {}", what, row_absmax.device().str(), codes.device().str());
  if (!row_absmax.is_contiguous()) fail("{}: row absmax must be contiguous", what);
}

Int8State quantize_int8_rowwise(const at::Tensor& weight) {
  constexpr const char* what = "quantize_int8_rowwise";
  if (!weight.defined()) fail("{}: weight is undefined", what);
  if (weight.dim() != 2) fail("{}: weight must be 2-D [out, in], got shape [{}]", what, fmt::join(weight.sizes(), ", "));
  const auto type = weight.scalar_type();
  if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf)
    fail("{}: weight must be fp32, bf16 or fp16, got {}", what, c10::toString(type));
  if (weight.size(1) == 0 && weight.size(0) > 0) fail("{}: weight rows are empty (shape [{}, 0])", what, weight.size(0));
  const auto w = weight.detach();
  // A non-finite value would turn its whole row into garbage codes (inf absmax: every other code 0).
  const auto bad_rows = at::logical_not(at::isfinite(w)).any(1);
  if (bad_rows.any().item<bool>())
    fail("{}: weight row {} holds a non-finite value (inf or NaN)", what, bad_rows.nonzero()[0][0].item<int64_t>());

  // The same ATen operations, in the same order and dtypes, as bitsandbytes' default int8_vectorwise_quant:
  // amax is exact in the input dtype, widening to fp32 is exact, and the products are computed in fp32
  // (bf16/fp16 x fp32 promotes to fp32).
  Int8State s;
  s.row_absmax = w.abs().amax(1).to(at::kFloat).contiguous();
  const auto scale = s.row_absmax.reciprocal() * 127.0;  // Python's `127.0 / t` is t.reciprocal() * 127.0
  auto scaled = w * scale.unsqueeze(1);
  // Rows whose scale overflowed to inf (absmax 0, or below ~3e-39) give 0 * inf = NaN and x * inf = +-inf,
  // which bitsandbytes' CPU float-to-int8 conversion (x86) turns into 0: defined here as code 0.
  scaled.masked_fill_(at::isinf(scale).unsqueeze(1), 0.0);
  s.codes = at::round(scaled).to(at::kChar).contiguous();     // round half to even; |scaled| <= 127 after rounding
  return s;
}

}  // namespace qtune::quant
