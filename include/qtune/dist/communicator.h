#pragma once
// The ranks of a data-parallel run, talking through LibTorch's c10d: a TCPStore served by rank 0 (or by torchrun's
// agent), a Gloo process group for CPU tensors and an NCCL one for CUDA tensors (Gloo's host copies in builds without
// NCCL). Under a launcher even a world of one forms the group; single() has none, and every operation is a no-op. A peer that dies or stops answering turns the next collective into an Error that
// names the rank(s) that did not report the failure too, within the timeout.
#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qtune/dist/world.h"

namespace qtune::dist {

class Communicator {
 public:
  // Connects to the others (blocks until all `world.size` ranks have joined, up to `timeout`).
  static std::shared_ptr<Communicator> connect(const World& world, std::chrono::milliseconds timeout);
  static std::shared_ptr<Communicator> single();  // this process alone, no group
  ~Communicator();
  bool connected() const { return group_ != nullptr; }  // a group formed (a launcher's world of one included)
  // The process group CUDA tensors are summed by: "nccl" where this build has it, else "gloo".
  static const char* cuda_backend_name();

  int rank() const { return world_.rank; }
  int size() const { return world_.size; }
  bool is_root() const { return world_.rank == 0; }
  const World& world() const { return world_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Sums each tensor over the ranks, in place; all are launched before the first is waited on. `what` names the
  // collective in an error ("the gradients of step 12").
  void all_reduce_sum(std::vector<at::Tensor>& tensors, const std::string& what);
  // Rank 0's `value` on every rank; the others wait for it up to `wait` (longer than the collectives' timeout: rank 0
  // may be quantizing a base or loading a checkpoint meanwhile).
  std::string share_from_root(const std::string& key, const std::string& value, std::chrono::milliseconds wait);
  // What a failed collective's error tells the user to do next (the trainer keeps it current: which checkpoint a
  // resume would continue from, or that none was saved yet).
  void set_recovery(std::string what_to_do) { recovery_ = std::move(what_to_do); }

 private:
  struct Group;
  Communicator(World world, std::chrono::milliseconds timeout);
  [[noreturn]] void fail_collective(const std::string& what, const std::exception& e);

  World world_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Group> group_;
  int64_t collectives_ = 0;
  std::string recovery_ = "no checkpoint was saved: start the run again";
};

}  // namespace qtune::dist
