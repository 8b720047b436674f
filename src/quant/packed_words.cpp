#include "qtune/quant/packed_words.h"

namespace qtune::quant {

at::Tensor as_int32_words(const at::Tensor& unsigned_words) {
  return (unsigned_words - (unsigned_words >= (int64_t{1} << 31)).to(at::kLong) * (int64_t{1} << 32)).to(at::kInt);
}

at::Tensor pack_rows(const at::Tensor& values, int bits) {
  const int64_t k = 32 / bits, rows = values.size(0), cols = values.size(1) / k;
  const auto v = values.to(at::kLong).reshape({rows, cols, k});
  const auto shifts = at::arange(k, at::kLong) * bits;
  const auto words = at::bitwise_left_shift(v, shifts).sum(2);  // fields are disjoint: sum == or
  return as_int32_words(words);
}

at::Tensor unpack_rows(const at::Tensor& words, int bits) {
  const int64_t k = 32 / bits;
  const auto w = words.to(at::kLong).bitwise_and((int64_t{1} << 32) - 1).unsqueeze(2);
  const auto shifts = at::arange(k, at::kLong) * bits;
  return at::bitwise_right_shift(w, shifts).bitwise_and((int64_t{1} << bits) - 1).reshape({words.size(0), -1});
}

}  // namespace qtune::quant
