#pragma once
// Autoregressive generation with a KV cache: one prefill over the prompt, then one token per step.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qtune/data/tokenizer.h"
#include "qtune/eval/sampling.h"
#include "qtune/nn/decoder.h"

namespace qtune::eval {

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  SamplingOptions sampling;
  std::vector<int64_t> stop_ids;  // generation ends after producing one of these (it is kept in the output)
};

struct GenerateResult {
  std::vector<int64_t> tokens;  // new tokens only
  std::string stop_reason;      // "stop token", "max tokens", "context full"
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double decode_tokens_per_second() const;
};

GenerateResult generate(nn::CausalLMImpl& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        const std::function<void(int64_t)>& on_token = {});

// Turns a growing token sequence into text pieces for streaming: decodes prompt + generated tokens and
// returns what was not printed yet, holding back an incomplete UTF-8 character (byte-fallback tokens).
class TextStreamer {
 public:
  TextStreamer(const data::Tokenizer& tokenizer, std::vector<int64_t> prompt);
  std::string push(int64_t token);
  std::string finish();

 private:
  const data::Tokenizer& tokenizer_;
  std::vector<int64_t> ids_;
  size_t printed_ = 0;
};

}  // namespace qtune::eval
