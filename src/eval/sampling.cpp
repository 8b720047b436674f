#include "qtune/eval/sampling.h"

#include <limits>

namespace qtune::eval {

int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, at::Generator& gen) {
  auto scores = logits.to(at::kCPU, at::kFloat).reshape({-1});
  // Below kGreedyBelow the draw is the argmax's but for exact ties, and logits / T would overflow float.
  if (options.temperature < kGreedyBelow) return scores.argmax().item<int64_t>();
  // The maximum subtracted first, so that the scores are <= 0 and dividing cannot make inf - inf = NaN.
  scores = (scores - scores.max()) / options.temperature;
  const auto neg_inf = -std::numeric_limits<float>::infinity();
  if (options.top_k > 0 && options.top_k < scores.size(0)) {
    auto kth = std::get<0>(scores.topk(options.top_k)).min();
    scores = scores.masked_fill(scores < kth, neg_inf);
  }
  if (options.top_p < 1.0) {
    auto [sorted, order] = scores.sort(/*dim=*/0, /*descending=*/false);
    auto cumulative = sorted.softmax(0).cumsum(0);
    auto remove = cumulative <= (1.0 - options.top_p);
    remove.index_put_({-1}, false);  // always keep the most likely token
    scores = scores.scatter(0, order, sorted.masked_fill(remove, neg_inf));
  }
  auto probs = scores.softmax(0);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

}  // namespace qtune::eval
