#include "qtune/kernels/w8a8_matmul.h"

#include <ATen/record_function.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "qtune/util/error.h"

namespace qtune::kernels {
namespace {

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

void check_float_2d(const at::Tensor& x, const char* what) {
  if (!x.defined()) fail("{}: input is undefined", what);
  if (x.dim() != 2) fail("{}: input must be 2-D [tokens, in], got shape [{}]", what, fmt::join(x.sizes(), ", "));
  const auto t = x.scalar_type();
  if (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf)
    fail("{}: input must be fp32, bf16 or fp16, got {}", what, c10::toString(t));
}

}  // namespace

TokenCodes quantize_tokens_int8(const at::Tensor& x) {
  check_float_2d(x, "quantize_tokens_int8");
  const auto xf = x.to(at::kFloat);
  const auto absmax = xf.abs().amax(1);
  TokenCodes c;
  c.scale = absmax / quant::kInt8Max;
  // vLLM multiplies each value by 127 / absmax (one fp32 division per token) rather than dividing by the scale; the
  // same here, so a value on a rounding boundary rounds as the runtime rounds it. A zero token multiplies by 0.
  const auto inv = at::where(absmax.gt(0), at::full_like(absmax, quant::kInt8Max).div_(absmax), at::zeros_like(absmax));
  c.codes = at::round(xf * inv.unsqueeze(1)).clamp_(-quant::kInt8Max, quant::kInt8Max).to(at::kChar);
  return c;
}

at::Tensor int8_matmul(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != at::kChar || b.scalar_type() != at::kChar || a.dim() != 2 || b.dim() != 2 ||
      a.size(1) != b.size(1))
    fail("int8_matmul: expected int8 [m, k] and int8 [n, k], got {} [{}] and {} [{}]", c10::toString(a.scalar_type()),
         fmt::join(a.sizes(), ", "), c10::toString(b.scalar_type()), fmt::join(b.sizes(), ", "));
  if (a.device() != b.device()) fail("int8_matmul: operands on {} and {}", a.device().str(), b.device().str());
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  if (m == 0 || n == 0 || k == 0) return at::zeros({m, n}, a.options().dtype(at::kInt));
  // bᵀ as a view (column-major [k, n]): the layout both backends want for the second operand; a contiguous copy of
  // bᵀ makes cuBLASLt several times slower.
  if (!a.is_cuda()) return at::_int_mm(a.contiguous(), b.contiguous().t());
  // cuBLASLt's int8 GEMM behind at::_int_mm refuses m <= 16 rows and k or n not a multiple of 8 (it raises rather than
  // falling back). Zero rows and columns padded in add nothing to the sums and are cut off again; a decode step (one
  // token per sequence) is where the row padding happens, at the cost of a GEMM of 17 rows.
  const int64_t mp = std::max<int64_t>(m, 17), kp = round_up(k, 8), np = round_up(n, 8);
  const auto ap = (mp != m || kp != k) ? at::constant_pad_nd(a, {0, kp - k, 0, mp - m}) : a.contiguous();
  const auto bp = (np != n || kp != k) ? at::constant_pad_nd(b, {0, kp - k, 0, np - n}) : b.contiguous();
  auto out = at::_int_mm(ap, bp.t());
  return (mp != m || np != n) ? out.narrow(0, 0, m).narrow(1, 0, n) : out;
}

at::Tensor w8a8_matmul(const at::Tensor& x, const quant::W8A8State& w) {
  RECORD_FUNCTION("qtune::w8a8_matmul", std::vector<c10::IValue>{});  // a named row in profiles
  if (!x.defined() || x.dim() < 1 || x.size(-1) != w.cols())
    fail("w8a8 linear: input has {} features, the weight expects {}", x.defined() && x.dim() > 0 ? x.size(-1) : 0,
         w.cols());
  if (x.device() != w.codes.device())
    fail("w8a8 linear: input is on {} but the weight is on {}", x.device().str(), w.codes.device().str());
  const auto tokens = quantize_tokens_int8(x.reshape({-1, w.cols()}));
  const auto sums = int8_matmul(tokens.codes, w.codes);
  // (sum * token scale) * channel scale, each product rounded in fp32: the order the tests' fp32 reference follows.
  auto y = sums.to(at::kFloat).mul_(tokens.scale.unsqueeze(1)).mul_(w.scale.unsqueeze(0));
  auto sizes = x.sizes().vec();
  sizes.back() = w.rows();
  return y.to(x.scalar_type()).view(sizes);
}

}  // namespace qtune::kernels
