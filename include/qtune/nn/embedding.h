#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cmath>

#include "qtune/io/hf_config.h"

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

// Gemma's embeddings times sqrt(hidden_size), that factor first rounded to the embeddings' dtype (transformers'
// ScaledWordEmbedding: 55.4256 becomes 55.5 in bf16). The product stays in that dtype: no fp32 copy. Other families:
// `x` as it is.
inline at::Tensor scale_embeddings(const at::Tensor& x, const io::ModelConfig& c) {
  if (!c.scale_embeddings) return x;
  const double factor =
      at::scalar_tensor(std::sqrt(static_cast<double>(c.hidden_size)), at::kDouble).to(x.scalar_type()).item<double>();
  return x * factor;
}

}  // namespace qtune::nn
