#include "qtune/eval/exact_match.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "qtune/eval/generate.h"
#include "qtune/util/strings.h"

namespace qtune::eval {
ExactMatchResult exact_match(nn::CausalLMImpl& model, const data::Tokenizer& tokenizer,
                             const std::vector<data::Record>& records, const data::ChatFormat& chat_template,
                             int64_t max_new_tokens, const std::vector<std::string>& categories) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  ExactMatchResult result;
  GenerateOptions options;
  options.max_new_tokens = max_new_tokens;
  options.stop_ids = {tokenizer.eos_id()};
  // A reply ends at its template's end of turn, which is not the vocabulary's EOS in every family (Gemma's
  // <end_of_turn>, Phi-3's <|end|>), as generate --chat stops there too.
  if (auto id = data::end_of_turn_id(chat_template, tokenizer)) options.stop_ids.push_back(*id);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (r.is_text() || r.messages.back().role != "assistant") continue;
    AnswerCheck c;
    const auto prompt = data::prompt_ids(r, chat_template, tokenizer);
    auto out = generate(model, prompt, options).tokens;
    if (!out.empty() && std::find(options.stop_ids.begin(), options.stop_ids.end(), out.back()) != options.stop_ids.end())
      out.pop_back();
    c.prompt = tokenizer.decode(prompt);
    c.expected = strip(r.messages.back().content, " \t\r\n");
    c.got = strip(tokenizer.decode(out), " \t\r\n");
    c.correct = c.got == c.expected;
    c.category = i < categories.size() ? categories[i] : "";
    result.correct += c.correct;
    ++result.total;
    auto& cat = result.by_category[c.category];
    cat.first += c.correct;
    ++cat.second;
    result.checks.push_back(std::move(c));
  }
  model.train(was_training);
  return result;
}

}  // namespace qtune::eval
