#include "qtune/eval/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>

namespace qtune::eval {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double GenerateResult::decode_tokens_per_second() const {
  return decode_seconds > 0 && tokens.size() > 1 ? static_cast<double>(tokens.size() - 1) / decode_seconds : 0.0;
}

GenerateResult generate(nn::CausalLMImpl& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        const std::function<void(int64_t)>& on_token) {
  torch::NoGradGuard no_grad;
  GenerateResult result;
  const int64_t context = model.config().max_position_embeddings;
  if (prompt.empty()) {
    result.stop_reason = "empty prompt";
    return result;
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(options.sampling.seed);
  nn::KVCache cache(model.config().num_hidden_layers);
  nn::ForwardOptions fwd;
  fwd.cache = &cache;

  auto t0 = std::chrono::steady_clock::now();
  auto input = at::tensor(prompt, at::kLong).unsqueeze(0);
  auto logits = model.forward(input, fwd).select(1, -1).squeeze(0);
  result.prefill_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  result.stop_reason = "max tokens";
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const int64_t token = sample_token(logits, options.sampling, gen);
    result.tokens.push_back(token);
    if (on_token) on_token(token);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) != options.stop_ids.end()) {
      result.stop_reason = "stop token";
      break;
    }
    if (step + 1 == options.max_new_tokens) break;
    if (cache.length() + 1 > context) {
      result.stop_reason = "context full";
      break;
    }
    logits = model.forward(at::tensor({token}, at::kLong).unsqueeze(0), fwd).select(1, -1).squeeze(0);
  }
  result.decode_seconds = seconds_since(t0);
  return result;
}

TextStreamer::TextStreamer(const data::Tokenizer& tokenizer, std::vector<int64_t> prompt)
    : tokenizer_(tokenizer), ids_(std::move(prompt)) {
  printed_ = tokenizer_.decode(ids_).size();
}

std::string TextStreamer::push(int64_t token) {
  ids_.push_back(token);
  const std::string text = tokenizer_.decode(ids_);
  static const std::string kReplacement = "\xEF\xBF\xBD";  // an incomplete byte sequence decodes to U+FFFD
  if (text.size() >= kReplacement.size() && text.compare(text.size() - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
    return "";
  if (text.size() <= printed_) return "";
  std::string out = text.substr(printed_);
  printed_ = text.size();
  return out;
}

std::string TextStreamer::finish() {
  const std::string text = tokenizer_.decode(ids_);
  if (text.size() <= printed_) return "";
  std::string out = text.substr(printed_);
  printed_ = text.size();
  return out;
}

}  // namespace qtune::eval
