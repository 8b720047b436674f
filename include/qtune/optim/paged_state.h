#pragma once
// Optimizer state that the GPU driver may page out: for parameters on a CUDA device, the state lives in CUDA
// managed (unified) memory, so under memory pressure the driver evicts it to host RAM instead of the step running
// out of memory, and prefetch() moves it back in one bulk transfer before the step reads it (as bitsandbytes'
// paged optimizers do). On the CPU it is ordinary memory and prefetch() does nothing.
#include <ATen/ATen.h>

namespace qtune::optim {

// A zero-filled tensor on `device`; in managed memory when `paged` and `device` is a GPU.
at::Tensor state_zeros(at::IntArrayRef shape, at::ScalarType dtype, at::Device device, bool paged);

// Migrates a managed tensor's pages to its GPU, asynchronously on the current stream; nothing for CPU tensors.
void prefetch(const at::Tensor& state);

// Whether `t` is in CUDA managed memory (always false in a build without CUDA).
bool is_managed(const at::Tensor& t);

}  // namespace qtune::optim
