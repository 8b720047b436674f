#include "qtune/quant/gptq.h"

#include <c10/util/irange.h>

#include <vector>

#include "qtune/util/error.h"

namespace qtune::quant {
namespace {

using at::indexing::None;
using at::indexing::Slice;

// H + damp·mean(diag H) → the upper Cholesky factor of its inverse (chol → cholesky_inverse → chol upper, as the
// references do), raising damp by `step` while the factorisation fails.
at::Tensor inverse_factor(at::Tensor& h, const GptqOptions& o, double& damp_used) {
  // The mean of a contiguous copy, as gptqmodel takes it: a reduction over the strided diagonal view sums in another
  // order and can differ in the last bit.
  const auto diag = h.diagonal().clone();
  const auto mean = diag.mean();
  for (double damp = o.damp; damp < 1.0; damp += o.damp_step) {
    h.diagonal().copy_(diag);
    h.diagonal().add_(damp * mean);
    auto [l, info] = at::linalg_cholesky_ex(h, /*upper=*/false, /*check_errors=*/false);
    if (info.item<int64_t>() == 0) {
      auto inv = at::cholesky_inverse(l);
      auto [u, info2] = at::linalg_cholesky_ex(inv, /*upper=*/true, /*check_errors=*/false);
      if (info2.item<int64_t>() == 0) {
        damp_used = damp;
        return u;
      }
    }
    if (o.damp_step <= 0) break;
  }
  fail("GPTQ: the Hessian is not positive definite even with dampening raised to 1 (the calibration inputs of this "
       "layer are degenerate: give more or more varied --calib text)");
}

}  // namespace

GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const GptqOptions& o) {
  o.grid.validate("GPTQ");
  if (weight.dim() != 2) fail("GPTQ: the weight must be 2-D, got {} dims", weight.dim());
  const int64_t columns = weight.size(1);
  if (hessian.dim() != 2 || hessian.size(0) != columns || hessian.size(1) != columns)
    fail("GPTQ: the Hessian must be [{0}, {0}] for a weight of {0} inputs", columns);
  check_finite_weight(weight, "GPTQ");
  if (!at::isfinite(hessian).all().item<bool>())
    fail("GPTQ: the calibration inputs of this linear hold a NaN or inf (a non-finite weight or overflow earlier in the "
         "model: its embeddings, a norm or a layer before)");
  if (o.block_size < 1) fail("GPTQ: block size must be positive, got {}", o.block_size);
  if (!(o.damp >= 0 && o.damp < 1)) fail("GPTQ: damp must be in [0, 1), got {}", o.damp);
  const int64_t groups = o.grid.groups(columns), gs = o.grid.group_size == -1 ? columns : o.grid.group_size;
  const int64_t maxq = o.grid.max_code();

  auto w = weight.to(at::kFloat).clone();
  auto h = hessian.to(at::kFloat).clone();
  GroupGrid grid = fit_group_grid(w, o.grid);  // the per-row grid; replaced group by group when grouped

  const auto dead = h.diagonal() == 0;
  GptqResult r;
  r.dead_columns = dead.sum().item<int64_t>();
  h.diagonal().masked_fill_(dead, 1.0);
  w.masked_fill_(dead.unsqueeze(0), 0.0);

  std::vector<GroupGrid> static_grids;
  if (o.static_groups && o.grid.group_size != -1)
    for (int64_t g = 0; g < groups; ++g) static_grids.push_back(fit_group_grid(w.narrow(1, g * gs, gs), o.grid));

  at::Tensor perm, invperm;
  if (o.act_order) {
    perm = at::argsort(h.diagonal(), /*stable=*/false, /*dim=*/0, /*descending=*/true);
    w = w.index_select(1, perm);
    h = h.index_select(0, perm).index_select(1, perm);
    invperm = at::argsort(perm);
  }
  const auto hinv = inverse_factor(h, o, r.damp);

  auto q_all = at::zeros_like(w), codes_all = at::zeros_like(w), losses = at::zeros_like(w);
  std::vector<at::Tensor> scales, zeros;
  std::vector<int64_t> column_group(static_cast<size_t>(columns));
  std::vector<int64_t> original_column;  // of each quantization position, with act-order
  if (o.act_order) {
    const auto p = perm.contiguous();
    original_column.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + columns);
  }
  int64_t now_idx = 1;
  for (int64_t i1 = 0; i1 < columns; i1 += o.block_size) {
    const int64_t i2 = std::min(i1 + o.block_size, columns), count = i2 - i1;
    auto w1 = w.index({Slice(), Slice(i1, i2)}).clone();
    auto q1 = at::zeros_like(w1), c1 = at::zeros_like(w1), err1 = at::zeros_like(w1), loss1 = at::zeros_like(w1);
    const auto hinv1 = hinv.index({Slice(i1, i2), Slice(i1, i2)});
    for (int64_t i = 0; i < count; ++i) {
      const int64_t col = i1 + i;
      const auto wi = w1.select(1, i);
      const auto d = hinv1.index({i, i});
      if (o.grid.group_size != -1) {
        if (!o.static_groups) {
          // The references fit the group on W, whose columns inside the current block have not received this
          // block's updates yet (only W1 has): kept, so the codes agree with theirs.
          if (col % gs == 0) grid = fit_group_grid(w.narrow(1, col, std::min(gs, columns - col)), o.grid);
          if (col / gs - now_idx == -1) {
            scales.push_back(grid.scale.flatten());
            zeros.push_back(grid.zero.flatten());
            ++now_idx;
          }
          column_group[static_cast<size_t>(col)] = col / gs;
        } else {
          const int64_t idx = o.act_order ? original_column[static_cast<size_t>(col)] : col;
          grid = static_grids[static_cast<size_t>(idx / gs)];
          column_group[static_cast<size_t>(col)] = idx / gs;
        }
      }
      const auto code = grid_codes(wi.unsqueeze(1), grid, maxq);
      const auto q = grid_values(code, grid).flatten();
      q1.select(1, i).copy_(q);
      c1.select(1, i).copy_(code.flatten());
      const auto delta = wi - q;
      loss1.select(1, i).copy_(delta.square() / d.square());
      const auto e = delta / d;
      err1.select(1, i).copy_(e);
      w1.index({Slice(), Slice(i, None)}).sub_(e.unsqueeze(1) * hinv1.index({i, Slice(i, None)}));
    }
    q_all.index({Slice(), Slice(i1, i2)}).copy_(q1);
    codes_all.index({Slice(), Slice(i1, i2)}).copy_(c1);
    losses.index({Slice(), Slice(i1, i2)}).copy_(loss1 / 2);
    if (i2 < columns)
      w.index({Slice(), Slice(i2, None)}).sub_(err1.matmul(hinv.index({Slice(i1, i2), Slice(i2, None)})));
  }
  r.loss = losses.sum().item<double>();

  if (o.static_groups && o.grid.group_size != -1) {
    for (const auto& g : static_grids) scales.push_back(g.scale.flatten()), zeros.push_back(g.zero.flatten());
  } else if (scales.empty()) {
    scales.push_back(grid.scale.flatten());
    zeros.push_back(grid.zero.flatten());
  }
  auto g_idx = at::tensor(column_group, at::kLong).to(at::kInt);  // in the order the columns were quantized
  if (o.act_order) {
    q_all = q_all.index_select(1, invperm);
    codes_all = codes_all.index_select(1, invperm);
    g_idx = g_idx.index_select(0, invperm);
  }
  r.dequantized = q_all;
  r.quantized.grid = o.grid;
  r.quantized.codes = codes_all.to(at::kByte);
  r.quantized.scales = at::stack(scales);
  r.quantized.zeros = at::stack(zeros).to(at::kInt);
  r.quantized.g_idx = g_idx.contiguous();
  return r;
}

double output_error(const at::Tensor& weight, const at::Tensor& approx, const at::Tensor& hessian) {
  const auto d = (weight.to(at::kDouble) - approx.to(at::kDouble));
  return (d.matmul(hessian.to(at::kDouble)) * d).sum().item<double>() / (2.0 * static_cast<double>(weight.size(0)));
}

}  // namespace qtune::quant
