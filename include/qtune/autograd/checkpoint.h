#pragma once
// Activation (gradient) checkpointing as a custom autograd Function, since LibTorch has no torch.utils.checkpoint:
// forward runs `fn` without recording a graph, keeping only its input; backward re-runs it with the RNG state of the
// first run restored (so dropout draws the same masks) and backpropagates through the recomputation.
// The trainable tensors `fn` uses are inputs of the Function, so their gradients reach them even when `x` itself
// needs none (the first layer's input comes from frozen embeddings: reentrant checkpointing in PyTorch loses the
// adapters' gradients there, which is why PEFT calls enable_input_require_grads).
#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace qtune::autograd {

using CheckpointedFn = std::function<at::Tensor(const at::Tensor&)>;

// fn(x), recomputed in backward. `fn` must capture what it needs by value: it runs again after this call returns.
at::Tensor checkpoint(CheckpointedFn fn, const at::Tensor& x, const std::vector<at::Tensor>& params);

}  // namespace qtune::autograd
