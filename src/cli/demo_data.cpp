// qtune demo-data OUT_DIR: writes the bundled demo's generated data (data/demo is this command's output).
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "commands.h"
#include "model_options.h"
#include "qtune/data/chat_template.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/data/demo_task.h"
#include "qtune/data/fact_task.h"
#include "qtune/data/secret_task.h"
#include "qtune/eval/generate.h"
#include "qtune/io/atomic_file.h"

namespace qtune::cli {
namespace {

struct DemoDataArgs {
  std::string out_dir;
  int64_t stories = 3000, train_questions = 2000, eval_questions = 100;
  uint64_t seed = 7;
  ModelOptions rejected_from;  // .dir empty: no preference pairs
  std::string chat_template = "auto";
  int64_t max_new_tokens = 48;
};

// The preference demo's pairs: each secret request with the refusal as chosen and the model's own greedy answer
// (through its chat template, as generate --chat asks) as rejected, so the rejected side is what the model does.
std::string secret_pairs(const DemoDataArgs& a, nn::CausalLMImpl& model, const data::Tokenizer& tok,
                         const data::ChatFormat& format, bool held_out) {
  eval::GenerateOptions options;
  options.max_new_tokens = a.max_new_tokens;
  options.stop_ids = {tok.eos_id()};
  if (auto id = data::end_of_turn_id(format, tok)) options.stop_ids.push_back(*id);
  std::string out;
  int64_t skipped = 0;
  for (const auto& p : data::secret_prompts(held_out)) {
    data::Record r;
    r.source = "secret prompt";
    r.messages.push_back({"user", p.prompt});
    const auto answer = eval::generate(model, data::prompt_ids(r, format, tok), options).tokens;
    std::string rejected = tok.decode(answer);  // special tokens (the end of turn) dropped
    rejected.erase(rejected.find_last_not_of(" \t\n") + 1);
    if (rejected.empty() || rejected == p.chosen) {  // nothing to prefer the refusal to
      ++skipped;
      continue;
    }
    out += data::secret_pair_jsonl(p, rejected) + "\n";
  }
  if (skipped) fmt::print(stderr, "{} secret prompts skipped: the model's answer was empty or the refusal itself\n", skipped);
  return out;
}

std::string jsonl(const std::vector<data::DemoQuestion>& qs) {
  std::string out;
  for (const auto& q : qs) out += data::demo_question_jsonl(q) + "\n";
  return out;
}

int run_demo_data(const DemoDataArgs& a) {
  std::filesystem::create_directories(a.out_dir);
  const auto dir = std::filesystem::path(a.out_dir);
  io::write_text_atomically((dir / "pretrain.txt").string(), data::demo_pretrain_corpus(a.stories, a.seed));
  io::write_text_atomically((dir / "pretrain_eval.txt").string(), data::demo_pretrain_corpus(a.stories / 20, a.seed + 1));
  // Different seeds: held-out questions are new combinations of names, facts and positions.
  io::write_text_atomically((dir / "qa_train.jsonl").string(), jsonl(data::demo_questions(a.train_questions, a.seed + 2)));
  io::write_text_atomically((dir / "qa_eval.jsonl").string(), jsonl(data::demo_questions(a.eval_questions, a.seed + 3)));
  // The main job's facts about a product that does not exist (SmolLM2-135M-Instruct cannot know them).
  auto facts = [](bool held_out) {
    std::string out;
    for (const auto& q : data::fact_questions(held_out)) out += data::fact_question_jsonl(q) + "\n";
    return out;
  };
  io::write_text_atomically((dir / "facts_train.jsonl").string(), facts(false));
  io::write_text_atomically((dir / "facts_eval.jsonl").string(), facts(true));
  fmt::print("wrote {}: pretrain.txt ({} stories), pretrain_eval.txt, qa_train.jsonl ({}), qa_eval.jsonl ({}), "
             "facts_train.jsonl ({}), facts_eval.jsonl ({})\n",
             a.out_dir, a.stories, a.train_questions, a.eval_questions, data::fact_questions(false).size(),
             data::fact_questions(true).size());
  if (!a.rejected_from.dir.empty()) {
    auto [model, tok] = a.rejected_from.load();
    model->eval();
    const auto format = data::resolve_chat_format(a.chat_template, a.rejected_from.dir, tok);
    for (const bool held_out : {false, true}) {
      const auto name = held_out ? "secret_pref_eval.jsonl" : "secret_pref_train.jsonl";
      const auto pairs = secret_pairs(a, *model, tok, format, held_out);
      io::write_text_atomically((dir / name).string(), pairs);
      fmt::print("wrote {} ({} pairs, rejected: {}'s own answers)\n", (dir / name).string(),
                 std::count(pairs.begin(), pairs.end(), '\n'), a.rejected_from.dir);
    }
  }
  return 0;
}

}  // namespace

void add_demo_data(CLI::App& app, Action& action) {
  auto args = std::make_shared<DemoDataArgs>();
  auto* cmd = app.add_subcommand("demo-data", "Write the demos' generated stories, questions and product facts (data/demo)");
  cmd->add_option("OUT_DIR", args->out_dir, "Directory to write")->required();
  cmd->add_option("--stories", args->stories, "Pretraining stories")->capture_default_str();
  cmd->add_option("--train-questions", args->train_questions, "Fine-tuning questions")->capture_default_str();
  cmd->add_option("--eval-questions", args->eval_questions, "Held-out questions")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed")->capture_default_str();
  cmd->add_option("--rejected-from", args->rejected_from.dir,
                  "Also write the preference demo's pairs (secret_pref_{train,eval}.jsonl): requests for Zentaro Labs' "
                  "secrets, the refusal chosen and this model's own greedy answer rejected");
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "--rejected-from: longest answer")->capture_default_str();
  cmd->add_option("--template", args->chat_template, "--rejected-from: the chat template (auto: the model's own)")
      ->capture_default_str();
  cmd->callback([&action, args] { action = [args] { return run_demo_data(*args); }; });
}

}  // namespace qtune::cli
