#pragma once
// The affine integer grid GPTQ, AWQ and round-to-nearest share: per output row and group of `group_size` input
// columns, value ≈ scale · (code − zero) with codes in 0 … 2^bits − 1. The group fit is GPTQ's Quantizer.find_params
// (gptqmodel, AutoGPTQ): the range [min(x, 0), max(x, 0)], symmetric ranges mirrored around zero with the zero point
// at 2^(bits−1), an all-zero group given the range ±1. IntQuantized is the result before any packing: the codes the
// algorithm chose, fp32 scales and integer zero points, and g_idx (the group of each input column, which act-order
// permutes).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace qtune::quant {

struct IntGridOptions {
  int bits = 4;              // 2, 4 or 8 (what the GPTQ checkpoint layout packs into int32 words)
  int64_t group_size = 128;  // input columns per group; -1: one group per row
  bool sym = true;

  int64_t max_code() const { return (int64_t{1} << bits) - 1; }
  int64_t groups(int64_t in_features) const;  // checks that the group divides in_features
  void validate(const std::string& what) const;
};

struct GroupGrid {
  at::Tensor scale;  // fp32 [rows, 1]
  at::Tensor zero;   // fp32 [rows, 1], integral values
};

// The grid of the columns `x` (fp32 [rows, k]) as find_params fits it.
GroupGrid fit_group_grid(const at::Tensor& x, const IntGridOptions& options);
// clamp(round(x / scale) + zero, 0, max_code) as fp32 codes, and scale · (code − zero).
at::Tensor grid_codes(const at::Tensor& x, const GroupGrid& grid, int64_t max_code);
at::Tensor grid_values(const at::Tensor& codes, const GroupGrid& grid);

struct IntQuantized {
  IntGridOptions grid;
  at::Tensor codes;   // uint8 [out, in], 0 … max_code
  at::Tensor scales;  // fp32 [groups, out]
  at::Tensor zeros;   // int32 [groups, out], 0 … max_code
  at::Tensor g_idx;   // int32 [in], 0 … groups − 1

  int64_t out_features() const { return codes.size(0); }
  int64_t in_features() const { return codes.size(1); }
  // fp32 [out, in]: scales[g_idx[i], o] · (codes[o, i] − zeros[g_idx[i], o]) with the scales as given (the GPTQ
  // checkpoint stores them in fp16: round them first to see what a loader computes).
  at::Tensor dequantize() const;
  void validate(const std::string& what) const;
};

// Refuses a weight holding a NaN or inf, naming `what` and the first such element's row and column: its group's grid
// would be NaN (a NaN fp16 scale in the checkpoint), and GPTQ's error feedback would spread it along the row.
void check_finite_weight(const at::Tensor& weight, const std::string& what);

// Round to nearest on the grid, group by group in column order (GPTQ without a Hessian; the RTN baseline).
// A non-finite weight is refused (check_finite_weight).
IntQuantized rtn_quantize(const at::Tensor& weight, const IntGridOptions& options);

}  // namespace qtune::quant
