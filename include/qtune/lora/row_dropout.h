#pragma once
// Dropout masks that depend on which sample row they fall on, not on how the rows were split into processes or
// micro-batches: row g of an epoch keyed k draws its mask from a generator seeded by (k, the module, g). So N
// data-parallel ranks holding b rows each apply exactly the masks one process holding N·b rows applies (whatever
// grad_accum), a recomputed (checkpointed) layer draws the masks of its first run, and a resumed run needs no
// generator state for them. CPU tensors draw with a CPU generator per row; CUDA ones hash (key, row, element) on the
// device, so no mask is made on the host (the two devices' masks differ, as their generators always did). The trainer opens a scope
// per micro-batch; outside one (tests, other callers) LoRA dropout draws from the default generator as before.
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

namespace qtune::lora {

struct DropoutRows {
  uint64_t key = 0;        // one per epoch of the run (dropout_key(seed, epoch, 0))
  int64_t first_row = 0;   // the index in its epoch of this process's row 0
};

// Process-wide rather than thread-local: the autograd engine may recompute a checkpointed layer on its own thread.
class DropoutRowsScope {
 public:
  explicit DropoutRowsScope(DropoutRows rows);
  ~DropoutRowsScope();
  DropoutRowsScope(const DropoutRowsScope&) = delete;
  DropoutRowsScope& operator=(const DropoutRowsScope&) = delete;

 private:
  std::optional<DropoutRows> previous_;
};

uint64_t dropout_key(uint64_t seed, int64_t epoch, int64_t salt);
uint64_t module_key(const std::string& name);

// Inverted dropout of x ([rows, ...]) with the current scope's row masks; at::dropout when no scope is open.
at::Tensor row_keyed_dropout(const at::Tensor& x, double p, uint64_t module);
// The kept-element mask (1 kept, 0 dropped) the device path draws for rows [first_row, ..) of `shape`, computed with
// integer arithmetic on `device` (public for its test, which runs it on the CPU).
at::Tensor hashed_row_mask(at::IntArrayRef shape, double keep, uint64_t key, uint64_t module, int64_t first_row,
                           at::Device device);

}  // namespace qtune::lora
