// qtune demo-data OUT_DIR: writes the bundled demo's generated data (data/demo is this command's output).
#include <fmt/format.h>

#include <filesystem>

#include "commands.h"
#include "qtune/data/demo_task.h"
#include "qtune/data/fact_task.h"
#include "qtune/io/atomic_file.h"

namespace qtune::cli {
namespace {

struct DemoDataArgs {
  std::string out_dir;
  int64_t stories = 3000, train_questions = 2000, eval_questions = 100;
  uint64_t seed = 7;
};

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
  cmd->callback([&action, args] { action = [args] { return run_demo_data(*args); }; });
}

}  // namespace qtune::cli
