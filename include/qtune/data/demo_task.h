#pragma once
// The bundled demo's data, generated (so the project ships nothing it did not make): a corpus of short stories for
// pretraining a tiny Llama from scratch, and a reading-comprehension task for the QLoRA fine-tune whose answers can be
// checked exactly. The stories state facts ("One day, Mia went to the forest."); the task asks about them in a
// format the pretraining never showed ("Question: Where did Mia go?"), so the base model cannot answer before
// fine-tuning and the adapter must learn to find the fact in the context and copy (or, for counts, add) it.
#include <cstdint>
#include <string>
#include <vector>

namespace qtune::data {

struct DemoQuestion {
  std::string context;   // two to four sentences, each about a different child
  std::string question;  // about one of them
  std::string answer;    // copied from the context ("went to the forest.", "was very sad.", "a red ball."), or a sum
  std::string kind;      // where | feeling | what | count
};

// `stories` paragraphs of three to six sentences, separated by blank lines; deterministic for a seed.
std::string demo_pretrain_corpus(int64_t stories, uint64_t seed);
std::vector<DemoQuestion> demo_questions(int64_t n, uint64_t seed);
// One alpaca-jsonl line: {"instruction": "Context: ...\nQuestion: ...", "output": answer, "category": kind}.
std::string demo_question_jsonl(const DemoQuestion& q);

}  // namespace qtune::data
