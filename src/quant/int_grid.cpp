#include "qtune/quant/int_grid.h"

#include <fmt/ranges.h>

#include "qtune/util/error.h"

namespace qtune::quant {

void IntGridOptions::validate(const std::string& what) const {
  if (bits != 2 && bits != 4 && bits != 8)
    fail("{}: bits must be 2, 4 or 8 (the GPTQ layout packs whole codes into int32 words), got {}", what, bits);
  if (group_size != -1 && group_size < 1) fail("{}: group size must be -1 (per row) or positive, got {}", what, group_size);
}

int64_t IntGridOptions::groups(int64_t in_features) const {
  if (group_size == -1) return 1;
  if (in_features % group_size != 0)
    fail("{} input features are not a multiple of the group size {} (choose a group size that divides it, or -1)",
         in_features, group_size);
  return in_features / group_size;
}

GroupGrid fit_group_grid(const at::Tensor& x, const IntGridOptions& o) {
  // The same tensor operations as find_params, in the same order, so the fp32 results agree bit for bit.
  const auto zeros = at::zeros({x.size(0)}, x.options());
  auto [lo, hi] = at::aminmax(x, 1);
  auto xmin = at::minimum(lo, zeros), xmax = at::maximum(hi, zeros);
  if (o.sym) {
    xmax = at::maximum(xmin.abs(), xmax);
    xmin = at::where(xmin < 0, -xmax, xmin);
  }
  const auto empty = o.sym ? xmax == 0 : (xmin == 0).logical_and(xmax == 0);
  xmin = at::where(empty, xmin - 1, xmin);
  xmax = at::where(empty, xmax + 1, xmax);
  const auto maxq = static_cast<double>(o.max_code());
  GroupGrid g;
  g.scale = (xmax - xmin) / maxq;
  g.zero = o.sym ? at::full_like(g.scale, (maxq + 1) / 2) : at::round(-xmin / g.scale);
  g.scale = g.scale.reshape({-1, 1});
  g.zero = g.zero.reshape({-1, 1});
  return g;
}

at::Tensor grid_codes(const at::Tensor& x, const GroupGrid& g, int64_t max_code) {
  return at::clamp(at::round(x / g.scale) + g.zero, 0, static_cast<double>(max_code));
}

at::Tensor grid_values(const at::Tensor& codes, const GroupGrid& g) { return g.scale * (codes - g.zero); }

at::Tensor IntQuantized::dequantize() const {
  const auto idx = g_idx.to(at::kLong);
  const auto s = scales.to(at::kFloat).index_select(0, idx).t();  // [out, in]
  const auto z = zeros.to(at::kFloat).index_select(0, idx).t();
  return s * (codes.to(at::kFloat) - z);
}

void IntQuantized::validate(const std::string& what) const {
  grid.validate(what);
  if (!codes.defined() || codes.dim() != 2 || codes.scalar_type() != at::kByte)
    fail("{}: codes must be uint8 [out, in]", what);
  const int64_t out = codes.size(0), in = codes.size(1);
  const int64_t groups = scales.defined() && scales.dim() == 2 ? scales.size(0) : -1;
  if (groups < 1 || scales.size(1) != out)
    fail("{}: scales must be [groups, {}], got [{}]", what, out, scales.defined() ? fmt::format("{}", fmt::join(scales.sizes(), ", ")) : "");
  if (!zeros.defined() || zeros.sizes() != scales.sizes()) fail("{}: zeros must have the scales' shape", what);
  if (!g_idx.defined() || g_idx.dim() != 1 || g_idx.size(0) != in) fail("{}: g_idx must be [{}]", what, in);
  if (in > 0) {
    const auto [lo, hi] = at::aminmax(g_idx.to(at::kLong));
    if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= groups)
      fail("{}: g_idx holds groups {} … {}, outside the {} groups of the scales", what, lo.item<int64_t>(),
           hi.item<int64_t>(), groups);
  }
  if (codes.numel() > 0 && codes.max().item<int64_t>() > grid.max_code())
    fail("{}: a code exceeds {} for {} bits", what, grid.max_code(), grid.bits);
}

void check_finite_weight(const at::Tensor& weight, const std::string& what) {
  const auto bad = at::logical_not(at::isfinite(weight));
  if (!bad.any().item<bool>()) return;
  const auto at_index = bad.nonzero()[0];
  const int64_t row = at_index[0].item<int64_t>(), col = weight.dim() > 1 ? at_index[1].item<int64_t>() : 0;
  fail("{}: the weight holds a non-finite value ({}) at row {}, column {}", what,
       (weight.dim() > 1 ? weight[row][col] : weight[row]).item<double>(), row, col);
}

IntQuantized rtn_quantize(const at::Tensor& weight, const IntGridOptions& o) {
  o.validate("round-to-nearest");
  if (weight.dim() != 2) fail("round-to-nearest: the weight must be 2-D, got {} dims", weight.dim());
  check_finite_weight(weight, "round-to-nearest");
  const auto w = weight.to(at::kFloat);
  const int64_t in = w.size(1), groups = o.groups(in), width = o.group_size == -1 ? in : o.group_size;
  std::vector<at::Tensor> codes, scales, zeros;
  for (int64_t g = 0; g < groups; ++g) {
    const auto cols = w.narrow(1, g * width, width);
    const auto grid = fit_group_grid(cols, o);
    codes.push_back(grid_codes(cols, grid, o.max_code()));
    scales.push_back(grid.scale.flatten());
    zeros.push_back(grid.zero.flatten());
  }
  IntQuantized q;
  q.grid = o;
  q.codes = at::cat(codes, 1).to(at::kByte);
  q.scales = at::stack(scales);
  q.zeros = at::stack(zeros).to(at::kInt);
  q.g_idx = at::div(at::arange(in, at::kLong), width, "floor").to(at::kInt);
  return q;
}

}  // namespace qtune::quant
