#pragma once
// AWQ (Lin et al. 2023, activation-aware weight quantization) for the linears that share one input, model-free: the
// calibration driver (calib/layerwise_awq) supplies the activations and the loss of a candidate. As llm-awq and
// AutoAWQ run it (gptqmodel's port is the oracle in tests):
//   - per input channel, the mean |x| of the activations and the mean over rows of |w| / max|w| of its group;
//   - scales s = x̄^α / (w̄^(1−α) + 1e-4), clamped ≥ 1e-4 and normalised by sqrt(max s · min s), for α = i / n_grid;
//     the α whose Q(W·s)·(x/s) is closest to W·x on the calibration data wins (s then folds into the layer before);
//   - per output row and group, the clipping range max|w|·(1 − i / n_grid), i < max_shrink · n_grid, that minimises
//     the group's output error on a token sample;
//   - AWQ's own round-to-nearest grid (not GPTQ's): asymmetric groups span [min, max], scale (max − min) / 15 and
//     zero −round(min / scale); symmetric ones max|w| / 7 with codes −8 … 7 stored as code + 8.
#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "qtune/quant/int_grid.h"

namespace qtune::quant {

struct AwqOptions {
  IntGridOptions grid{4, 128, false};
  int n_grid = 20;
  bool duo_scaling = true;  // s from x̄ and w̄ (else from x̄ alone)
  bool clip = true;
  double max_shrink = 0.5;
  int64_t clip_sample_tokens = 512;
};

// The grid's values of `weight` [out, in] (fp32, in place semantics of AWQ's pseudo_quantize_tensor).
at::Tensor awq_fake_quantize(const at::Tensor& weight, const IntGridOptions& grid);
// Codes, fp32 scales and zero points of the same grid (g_idx = i / group_size).
IntQuantized awq_quantize(const at::Tensor& weight, const IntGridOptions& grid);

// Mean over the rows of all `weights` (each [out_k, in]) of |w| / (max |w| of its group + 1e-6): fp32 [in].
at::Tensor awq_weight_mean(const std::vector<at::Tensor>& weights, int64_t group_size);
// Mean |x| per channel over every row of `x` [.., in] (fp32 sums): fp32 [in].
at::Tensor awq_activation_mean(const std::vector<at::Tensor>& x);
// The candidate scales [in] for α = ratio.
at::Tensor awq_scales(const at::Tensor& x_mean, const at::Tensor& w_mean, double ratio, bool duo_scaling);

struct AwqScaleSearch {
  at::Tensor scales;  // fp32 [in], the best candidate
  double ratio = 0, loss = 0;
  std::vector<double> losses;  // per candidate α = i / n_grid
};
// Tries every α; `loss(scales)` returns the error of the layers with Q(W·s)/s as weights on the calibration inputs.
AwqScaleSearch awq_search_scales(const at::Tensor& x_mean, const at::Tensor& w_mean, const AwqOptions& options,
                                 const std::function<double(const at::Tensor& scales)>& loss);

// The best clipping bound per output row and group (fp32 [out, groups]) for `weight` [out, in] on the inputs
// `x` [tokens, in] (already divided by the scales), scored on every ⌊tokens / clip_sample_tokens⌋-th token.
at::Tensor awq_clip_bounds(const at::Tensor& weight, const at::Tensor& x, const AwqOptions& options);
// weight clamped to ±bound, group by group.
at::Tensor awq_apply_clip(const at::Tensor& weight, const at::Tensor& bounds, int64_t group_size);

}  // namespace qtune::quant
