#include "qtune/qat/qat_options.h"

#include <cmath>

#include "qtune/util/error.h"

namespace qtune::qat {

int64_t set_fake_quant(torch::nn::Module& module, bool on) {
  int64_t n = 0;
  for (const auto& m : module.modules(/*include_self=*/true))
    if (auto* s = dynamic_cast<FakeQuantSwitch*>(m.get())) s->set_fake_quant(on), ++n;
  return n;
}

int64_t qat_start_step(double start, int64_t total_steps) {
  if (!(start >= 0 && start < 1)) fail("quant.qat_start must lie in [0, 1), got {}", start);
  return static_cast<int64_t>(std::ceil(start * static_cast<double>(total_steps)));
}

}  // namespace qtune::qat
