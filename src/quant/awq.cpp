#include "qtune/quant/awq.h"

#include <cmath>
#include <limits>

#include "qtune/util/error.h"

namespace qtune::quant {
namespace {

// [rows, in] → [rows · groups, group] (one row per group), as pseudo_quantize_tensor reshapes.
at::Tensor by_group(const at::Tensor& w, int64_t group_size) {
  return group_size > 0 ? w.reshape({-1, group_size}) : w.reshape({w.size(0), -1});
}

struct AwqGrid {
  at::Tensor scales, zeros;  // [rows · groups, 1]; zeros undefined for symmetric grids
};

AwqGrid fit(const at::Tensor& g, const IntGridOptions& o) {
  AwqGrid grid;
  if (!o.sym) {
    const auto max_val = g.amax(1, true), min_val = g.amin(1, true);
    grid.scales = (max_val - min_val).clamp_min(1e-5) / static_cast<double>(o.max_code());
    grid.zeros = (-at::round(min_val / grid.scales)).clamp_(0, o.max_code());
  } else {
    const auto max_val = g.abs().amax(1, true).clamp_min(1e-5);
    grid.scales = max_val / static_cast<double>((int64_t{1} << (o.bits - 1)) - 1);
  }
  return grid;
}

// The signed (symmetric) or offset (asymmetric) integer before the zero point is taken away again.
at::Tensor integers(const at::Tensor& g, const AwqGrid& grid, const IntGridOptions& o) {
  auto v = g / grid.scales;
  v.round_();
  if (!o.sym) return v.add_(grid.zeros).clamp_(0, o.max_code());
  const int64_t half = int64_t{1} << (o.bits - 1);
  return v.clamp_(-half, half - 1);
}

at::Tensor values(const at::Tensor& ints, const AwqGrid& grid, const IntGridOptions& o) {
  return o.sym ? ints * grid.scales : (ints - grid.zeros).mul_(grid.scales);
}

at::Tensor fake_quantize_groups(const at::Tensor& g, const IntGridOptions& o) {
  const auto grid = fit(g, o);
  return values(integers(g, grid, o), grid, o);
}

}  // namespace

at::Tensor awq_fake_quantize(const at::Tensor& weight, const IntGridOptions& grid) {
  if (weight.dim() != 2) fail("AWQ: expected a 2-D weight, got {} dimensions", weight.dim());
  grid.groups(weight.size(1));
  return fake_quantize_groups(by_group(weight.to(at::kFloat), grid.group_size), grid).reshape(weight.sizes());
}

IntQuantized awq_quantize(const at::Tensor& weight, const IntGridOptions& o) {
  const int64_t out = weight.size(0), in = weight.size(1), groups = o.groups(in);
  const auto g = by_group(weight.to(at::kFloat), o.group_size);
  const auto grid = fit(g, o);
  auto ints = integers(g, grid, o);
  IntQuantized q;
  q.grid = o;
  const int64_t half = int64_t{1} << (o.bits - 1);
  q.codes = (o.sym ? ints + static_cast<double>(half) : ints).reshape({out, in}).to(at::kByte);
  q.scales = grid.scales.reshape({out, groups}).t().contiguous();
  q.zeros = o.sym ? at::full({groups, out}, half, at::kInt) : grid.zeros.reshape({out, groups}).t().to(at::kInt).contiguous();
  const int64_t gs = o.group_size > 0 ? o.group_size : in;
  q.g_idx = at::div(at::arange(in, at::kLong), gs, "floor").to(at::kInt);
  return q;
}

at::Tensor awq_weight_mean(const std::vector<at::Tensor>& weights, int64_t group_size) {
  if (weights.empty()) fail("AWQ: no weights to average");
  const int64_t in = weights[0].size(1);
  const int64_t g = group_size > 0 ? group_size : in;
  if (in % g != 0) fail("AWQ: in_features {} is not a multiple of the group size {}", in, g);
  std::vector<at::Tensor> fp32;
  for (const auto& w : weights) {
    if (w.size(1) != in) fail("AWQ: linears sharing an input have {} and {} input features", in, w.size(1));
    fp32.push_back(w.to(at::kFloat));
  }
  // The operations of gptqmodel's _accumulate_awq_weight_mean, in its order: normalised |w| summed per linear in
  // fp32, the sums added, divided by the row count. (Its other branch, one sum over the concatenation, is never taken:
  // it compares device.type with a torch.device.)
  auto sum = at::zeros({in}, at::kFloat);
  int64_t rows = 0;
  for (const auto& w : fp32) {
    auto a = w.abs();
    auto view = a.reshape({w.size(0), -1, g});
    auto group_scale = view.amax(2, true);
    view.div_(group_scale.add_(1e-6));
    sum += a.sum(0);
    rows += w.size(0);
  }
  return sum / static_cast<double>(rows);
}

at::Tensor awq_activation_mean(const std::vector<at::Tensor>& x) {
  if (x.empty()) fail("AWQ: no activations recorded");
  std::vector<at::Tensor> flat;
  for (const auto& t : x) flat.push_back(t.reshape({-1, t.size(-1)}));
  const auto all = flat.size() == 1 ? flat[0] : at::cat(flat, 0);
  return all.abs().to(at::kFloat).sum(0) / static_cast<double>(all.size(0));
}

at::Tensor awq_scales(const at::Tensor& x_mean, const at::Tensor& w_mean, double ratio, bool duo_scaling) {
  at::Tensor s = duo_scaling ? (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp_min(1e-4)
                             : x_mean.pow(ratio).clamp_min(1e-4).view(-1);
  s = s / (s.max() * s.min()).sqrt();
  s.masked_fill_(at::isinf(s), 1);
  s.masked_fill_(at::isnan(s), 1);
  return s;
}

AwqScaleSearch awq_search_scales(const at::Tensor& x_mean, const at::Tensor& w_mean, const AwqOptions& o,
                                 const std::function<double(const at::Tensor&)>& loss) {
  if (o.n_grid < 1) fail("AWQ: the scale grid needs at least one point, got {}", o.n_grid);
  AwqScaleSearch best;
  best.loss = std::numeric_limits<double>::infinity();
  for (int i = 0; i < o.n_grid; ++i) {
    const double ratio = static_cast<double>(i) / o.n_grid;
    const auto s = awq_scales(x_mean, w_mean, ratio, o.duo_scaling);
    const double l = loss(s);
    best.losses.push_back(l);
    if (l < best.loss) best.loss = l, best.ratio = ratio, best.scales = s;
  }
  if (!best.scales.defined())
    fail("AWQ: every candidate scale gave a non-finite loss (the calibration activations overflow)");
  return best;
}

at::Tensor awq_clip_bounds(const at::Tensor& weight, const at::Tensor& x, const AwqOptions& o) {
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t g = o.grid.group_size > 0 ? o.grid.group_size : in, groups = in / g;
  o.grid.groups(in);
  auto feat = x.reshape({-1, in}).to(at::kFloat);
  const int64_t step = std::max<int64_t>(1, feat.size(0) / o.clip_sample_tokens);
  // [groups, tokens, g]: each group's slice of the sampled inputs, so that a group's outputs are one batched matmul
  // (gptqmodel multiplies and sums elementwise; the same dot products, summed in another order).
  feat = feat.slice(0, 0, feat.size(0), step).reshape({-1, groups, g}).permute({1, 0, 2}).contiguous();
  const auto w = weight.to(at::kFloat).reshape({out, groups, g});
  auto outputs = [&](const at::Tensor& v) { return at::bmm(feat, v.permute({1, 2, 0})); };  // [groups, tokens, out]
  const auto org_max = w.abs().amax(-1, true);  // [out, groups, 1]
  auto best = org_max.clone();
  auto min_errs = at::full({groups, out}, 1e9, at::kFloat);
  const auto org_out = outputs(w);
  const int shrink_steps = static_cast<int>(o.max_shrink * o.n_grid);
  for (int i = 0; i < shrink_steps; ++i) {
    const auto max_val = org_max * (1 - static_cast<double>(i) / o.n_grid);
    const auto clamped = at::clamp(w, -max_val, max_val);
    const auto q = fake_quantize_groups(clamped.reshape({-1, g}), o.grid).reshape(clamped.sizes());
    const auto err = (outputs(q) - org_out).pow(2).mean(1);  // [groups, out]
    const auto better = err < min_errs;
    min_errs = at::where(better, err, min_errs);
    best = at::where(better.t().unsqueeze(-1), max_val, best);
  }
  return best.reshape({out, groups});
}

at::Tensor awq_apply_clip(const at::Tensor& weight, const at::Tensor& bounds, int64_t group_size) {
  const int64_t out = weight.size(0), in = weight.size(1);
  const auto b = bounds.reshape({out, -1, 1});
  return at::clamp(weight.reshape({out, b.size(1), -1}), -b, b).reshape({out, in});
}

}  // namespace qtune::quant
