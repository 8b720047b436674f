#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

namespace qtune::nn {

// Token embeddings, a lookup table [vocab, hidden] (registered as "weight", as in Hugging Face).
class EmbeddingImpl : public torch::nn::Module {
 public:
  explicit EmbeddingImpl(at::Tensor weight) {
    weight_ = register_parameter("weight", std::move(weight), /*requires_grad=*/false);
  }
  at::Tensor forward(const at::Tensor& ids) { return at::embedding(weight_, ids); }
  const at::Tensor& weight() const { return weight_; }

 private:
  at::Tensor weight_;
};

}  // namespace qtune::nn
