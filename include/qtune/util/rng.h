#pragma once
// Reading and restoring a generator's state under its lock: what recomputation (gradient checkpointing) and exact
// resume both need so that dropout draws the same masks again.
#include <ATen/ATen.h>

namespace qtune {

at::Tensor generator_state(at::Generator generator);
void set_generator_state(at::Generator generator, const at::Tensor& state);

}  // namespace qtune
