#include "qtune/eval/perplexity.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "qtune/util/error.h"

namespace qtune::eval {

at::Tensor next_token_nll(nn::CausalLMImpl& model, const std::vector<int64_t>& ids, int64_t last) {
  torch::NoGradGuard no_grad;
  if (ids.size() < 2) return at::empty({0}, at::kFloat);
  auto input = at::tensor(ids, at::kLong).unsqueeze(0);
  const int64_t predicted = input.size(1) - 1;
  const int64_t k = last < 0 ? predicted : std::min(last, predicted);
  auto hidden = model.hidden_states(input).squeeze(0);  // [T, H]
  auto logits = model.logits(hidden.narrow(0, predicted - k, k)).to(at::kFloat);  // [k, V]
  auto logp = at::log_softmax(logits, -1);
  auto targets = input.squeeze(0).narrow(0, 1 + predicted - k, k).to(logp.device());
  return -logp.gather(1, targets.unsqueeze(1)).squeeze(1).to(at::kCPU);
}

PerplexityResult sliding_window_perplexity(nn::CausalLMImpl& model, const std::vector<int64_t>& ids,
                                           int64_t max_length, int64_t stride) {
  if (max_length < 2) fail("--seq-len must be at least 2, got {}", max_length);
  if (stride < 1 || stride > max_length) fail("--stride must be in [1, seq-len = {}], got {}", max_length, stride);
  PerplexityResult result;
  const int64_t n = static_cast<int64_t>(ids.size());
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < n; begin += stride) {
    const int64_t end = std::min(begin + max_length, n);
    const int64_t target_len = end - prev_end;  // tokens not scored by an earlier window
    std::vector<int64_t> window(ids.begin() + begin, ids.begin() + end);
    auto nll = next_token_nll(model, window, target_len);  // the last predictions of the window
    const int64_t scored = nll.size(0);
    result.nll_sum += nll.sum().item<double>();
    result.predicted_tokens += scored;
    prev_end = end;
    if (end == n) break;
  }
  return result;
}

PerplexityResult document_perplexity(nn::CausalLMImpl& model, const std::vector<std::vector<int64_t>>& docs,
                                     int64_t max_length) {
  PerplexityResult result;
  for (const auto& doc : docs) {
    std::vector<int64_t> ids(doc.begin(), doc.begin() + std::min<int64_t>(max_length, doc.size()));
    auto nll = next_token_nll(model, ids);
    result.nll_sum += nll.sum().item<double>();
    result.predicted_tokens += nll.size(0);
  }
  return result;
}

}  // namespace qtune::eval
