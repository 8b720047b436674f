#pragma once
// How a calibrated run's linears did against round-to-nearest on the same grid and inputs: what `qtune quantize`
// and a recipe's calibrated base print. Linears without an RTN error (kept unquantized, or no calibration) are left
// out.
#include <cstdint>
#include <vector>

namespace qtune::calib {

struct RtnComparison {
  int64_t better = 0, compared = 0;
  double mean_error = 0, mean_rtn_error = 0;
};

template <class LinearReport>
RtnComparison compare_with_rtn(const std::vector<LinearReport>& linears) {
  RtnComparison c;
  for (const auto& l : linears) {
    if (!(l.rtn_error > 0)) continue;
    c.better += l.error < l.rtn_error;
    c.mean_error += l.error;
    c.mean_rtn_error += l.rtn_error;
    ++c.compared;
  }
  if (c.compared > 0) c.mean_error /= static_cast<double>(c.compared), c.mean_rtn_error /= static_cast<double>(c.compared);
  return c;
}

}  // namespace qtune::calib
