#pragma once
// Held-out answers checked exactly: each record's prompt (its template, up to where the reply starts) is completed
// greedily until EOS, and the reply must equal the record's answer after trimming whitespace. This is what the demo
// reports before and after fine-tuning.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qtune/data/chat_template.h"
#include "qtune/data/records.h"
#include "qtune/data/tokenizer.h"
#include "qtune/nn/decoder.h"

namespace qtune::eval {

struct AnswerCheck {
  std::string prompt, expected, got;
  std::string category;
  bool correct = false;
};

struct ExactMatchResult {
  int64_t correct = 0, total = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> by_category;  // category -> (correct, total)
  std::vector<AnswerCheck> checks;
  double rate() const { return total ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
};

// `categories` (optional, parallel to `records`) groups the counts.
ExactMatchResult exact_match(nn::CausalLMImpl& model, const data::Tokenizer& tokenizer,
                             const std::vector<data::Record>& records, const data::ChatFormat& chat_template,
                             int64_t max_new_tokens, const std::vector<std::string>& categories = {});

}  // namespace qtune::eval
