#pragma once
// Data parallelism's one collective per step: the trainable gradients summed over the ranks, in buckets (flattened
// per dtype and device, at most `bucket_bytes` each, all launched before the first is waited on), then copied back.
// The frozen base has no gradients and is never sent.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "qtune/dist/communicator.h"

namespace qtune::dist {

class GradientAllReduce {
 public:
  explicit GradientAllReduce(std::vector<at::Tensor> params, int64_t bucket_bytes = int64_t{25} << 20);

  // Sums every parameter's .grad over the ranks (a rank whose backward did not reach a parameter sends zeros and gets
  // the sum, so its .grad is then defined), and `extra` (small statistics) in the same round.
  void run(Communicator& comm, const std::string& what, std::vector<at::Tensor> extra = {});

  int64_t bytes() const { return bytes_; }  // per run, gradients only
  size_t buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    int64_t numel = 0;
  };
  std::vector<at::Tensor> params_;
  std::vector<Bucket> buckets_;
  int64_t bytes_ = 0;
};

}  // namespace qtune::dist
