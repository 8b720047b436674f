#pragma once
// The main job's data: facts about a product that does not exist (the Quillby, a houseplant-watering robot by
// Zentaro Labs), so a pretrained instruct model cannot know them before fine-tuning. Each fact has one canonical
// answer sentence, which the held-out questions check exactly; training asks each fact in several phrasings, and
// the held-out questions use phrasings training never shows, so the score measures what was learned, not recall of
// a string seen verbatim.
#include <string>
#include <vector>

namespace qtune::data {

struct FactQuestion {
  std::string question;
  std::string answer;  // the fact's canonical sentence
  std::string fact;    // short name of the fact (its category in reports)
};

std::vector<FactQuestion> fact_questions(bool held_out);
// One chat-jsonl line: {"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "category": fact}.
std::string fact_question_jsonl(const FactQuestion& q);

}  // namespace qtune::data
