#pragma once
// c10d's ProcessGroupNCCL, for the CUDA tensors of a data-parallel run; in its own file because its header needs
// nccl.h (from the nvidia-nccl wheel torch depends on), which only CUDA builds have.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace qtune::dist {

// Null when this build has no NCCL (QTUNE_WITH_NCCL 0): CUDA tensors then go through Gloo.
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout);

}  // namespace qtune::dist
