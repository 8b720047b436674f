#include "qtune/train/chunked_loss.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "qtune/util/error.h"

namespace qtune::train {
namespace {

// Loss and both gradients in one pass over the chunks; backward only scales them by the incoming gradient.
struct ChunkedCrossEntropy : public torch::autograd::Function<ChunkedCrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h, const at::Tensor& w,
                            const at::Tensor& target, int64_t rows, double softcap) {
    const bool need_h = h.requires_grad(), need_w = w.requires_grad();
    const int64_t n = h.size(0);
    // A frozen 16-bit head multiplies in its own dtype (the GEMM accumulates in fp32; the logits are rounded to it
    // once, as transformers' bf16 lm_head does) and only each chunk's logits go to fp32: an fp32 copy of the whole
    // head would be V x H x 4 bytes, 2 GiB for a 7B's 152k x 3584, held through the step. A trained head (its fp32
    // gradient is accumulated here) and an fp32 one take the fp32 path.
    const bool low = !need_w && (w.scalar_type() == at::kBFloat16 || w.scalar_type() == at::kHalf);
    auto wf = low ? w : w.to(at::kFloat);
    auto total = at::zeros({}, h.options().dtype(at::kFloat));
    at::Tensor grad_h = need_h ? at::empty_like(h) : at::Tensor();
    at::Tensor grad_w = need_w ? at::zeros_like(wf) : at::Tensor();
    for (int64_t start = 0; start < n; start += rows) {
      const int64_t len = std::min(rows, n - start);
      auto hc = h.narrow(0, start, len).to(wf.scalar_type());
      auto tc = target.narrow(0, start, len);
      auto logits = at::matmul(hc, wf.t()).to(at::kFloat);  // [len, V]
      at::Tensor capped;                     // tanh(l / cap), whose derivative the gradient needs
      if (softcap > 0) {
        capped = at::tanh(logits / softcap);
        logits = capped * softcap;
      }
      auto lse = at::logsumexp(logits, 1);
      total += (lse - logits.gather(1, tc.unsqueeze(1)).squeeze(1)).sum();
      if (!need_h && !need_w) continue;
      // d(Σ loss)/d logits = softmax − one-hot, computed in place in the logits buffer.
      logits.sub_(lse.unsqueeze(1)).exp_();
      logits.scatter_add_(1, tc.unsqueeze(1), at::full({len, 1}, -1.0f, logits.options()));
      if (softcap > 0) logits.mul_(1 - capped.square());  // d(cap·tanh(l / cap))/dl
      if (need_h) grad_h.narrow(0, start, len).copy_(at::matmul(logits.to(wf.scalar_type()), wf));
      if (need_w) grad_w.addmm_(logits.t(), hc);
    }
    ctx->saved_data["grad_h"] = grad_h;
    ctx->saved_data["grad_w"] = need_w ? grad_w.to(w.scalar_type()) : at::Tensor();
    return total;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto& g = grad_outputs[0];
    auto gh = ctx->saved_data["grad_h"].toTensor();
    auto gw = ctx->saved_data["grad_w"].toTensor();
    return {gh.defined() ? gh * g.to(gh.scalar_type()) : at::Tensor(),
            gw.defined() ? gw * g.to(gw.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

LossSum chunked_cross_entropy(const at::Tensor& hidden, const at::Tensor& head_weight, const at::Tensor& targets,
                              int64_t rows_per_chunk, double softcap) {
  if (hidden.dim() != 3 || targets.dim() != 2 || hidden.size(0) != targets.size(0) || hidden.size(1) != targets.size(1))
    fail("chunked_cross_entropy: hidden [B, T, H] and targets [B, T] do not match");
  const int64_t hsize = hidden.size(2), vocab = head_weight.size(0);
  auto flat_targets = targets.reshape({-1}).to(hidden.device());
  auto rows = at::nonzero(flat_targets != -100).squeeze(1);
  LossSum out;
  out.tokens = rows.size(0);
  if (out.tokens == 0) {
    out.sum = (hidden.sum() * 0).to(at::kFloat);  // keeps the graph connected for an all-masked micro-batch
    return out;
  }
  auto t = flat_targets.index_select(0, rows);
  const auto [lowest, highest] = at::aminmax(t);
  if (lowest.item<int64_t>() < 0 || highest.item<int64_t>() >= vocab)
    fail("chunked_cross_entropy: a target id lies outside the vocabulary of {} tokens", vocab);
  auto h = hidden.reshape({-1, hsize}).index_select(0, rows);
  if (rows_per_chunk <= 0) rows_per_chunk = std::max<int64_t>(1, (int64_t{64} << 20) / (4 * vocab));
  out.sum = ChunkedCrossEntropy::apply(h, head_weight, t, rows_per_chunk, softcap);
  return out;
}

}  // namespace qtune::train
