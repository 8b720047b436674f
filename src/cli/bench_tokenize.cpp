// qtune bench tokenize MODEL --text FILE: token ids per second of the model's tokenizer on one thread, the best of
// several passes (a fresh tokenizer each pass, so no pass profits from the word cache of the one before).
// scripts/bench_tokenize.py runs it beside HF tokenizers on the same text.
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "qtune/data/chat_template.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/data/records.h"
#include "qtune/data/text_file.h"
#include "qtune/data/tokenizer.h"

namespace qtune::cli {
namespace {

struct TokenizeBenchArgs {
  std::string model, text_file;
  int64_t repeat = 3;
  bool json = false;
};

int run_bench_tokenize(const TokenizeBenchArgs& a) {
  const auto text = data::read_text_file(a.text_file, "--text");
  double best = 0;
  size_t count = 0;
  for (int64_t i = 0; i < a.repeat; ++i) {
    const auto tok = data::Tokenizer::load(a.model);
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text, false, false);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    count = ids.size();
    best = std::max(best, static_cast<double>(ids.size()) / s);
  }
  if (a.json) {
    fmt::print("{}\n", nlohmann::json({{"ids", count}, {"bytes", text.size()}, {"ids_per_second", best}}).dump());
  } else {
    fmt::print("{}: {} bytes -> {} ids; {:.0f} ids/s (best of {}, one thread)\n", a.text_file, text.size(), count, best,
               a.repeat);
  }
  return 0;
}

struct TemplateBenchArgs {
  std::string model, data_file, chat_template = "auto";
  bool json = false;
};

// Conversations per second through the chat template and the tokenizer (tokenize_records, one thread): what
// scripts/bench_chat_template.py measures beside transformers' apply_chat_template(tokenize=True). The template is
// parsed once, before the clock starts.
int run_bench_template(const TemplateBenchArgs& a) {
  const auto tok = data::Tokenizer::load(a.model);
  const auto format = data::resolve_chat_format(a.chat_template, a.model, tok);
  const auto records = data::read_records(a.data_file, data::DataFormat::ChatJsonl);
  const auto t0 = std::chrono::steady_clock::now();
  const auto set = data::tokenize_records(records, format, tok, /*train_on_prompt=*/false, 1 << 20);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t ids = 0;
  for (const auto& x : set.samples) ids += x.input_ids.size();
  if (a.json) {
    fmt::print("{}\n", nlohmann::json({{"conversations", records.size()}, {"ids", ids}, {"seconds", s},
                                       {"template", format.describe()}}).dump());
  } else {
    fmt::print("{} conversations -> {} ids in {:.3f} s ({:.0f} conversations/s, template {})\n", records.size(), ids, s,
               records.size() / s, format.describe());
  }
  return 0;
}

}  // namespace

void add_bench_template(CLI::App& bench, Action& action) {
  auto args = std::make_shared<TemplateBenchArgs>();
  auto* cmd = bench.add_subcommand("template", "Chat template + tokenizer speed on chat-jsonl conversations (one thread)");
  cmd->add_option("MODEL", args->model, "Model directory or .gguf")->required();
  cmd->add_option("--data", args->data_file, "chat-jsonl conversations")->required()->check(CLI::ExistingFile);
  cmd->add_option("--template", args->chat_template, "auto, a named template or FILE.jinja")->capture_default_str();
  cmd->add_flag("--json", args->json, "Print one JSON object");
  cmd->callback([&action, args] { action = [args] { return run_bench_template(*args); }; });
}

void add_bench_tokenize(CLI::App& bench, Action& action) {
  auto args = std::make_shared<TokenizeBenchArgs>();
  auto* cmd = bench.add_subcommand("tokenize", "Tokenizer speed (ids/s, one thread) on a text file");
  cmd->add_option("MODEL", args->model, "Model directory, tokenizer.json, tokenizer.model or .gguf")->required();
  cmd->add_option("--text", args->text_file, "UTF-8 text to encode")->required()->check(CLI::ExistingFile);
  cmd->add_option("--repeat", args->repeat, "Passes (the best counts)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--json", args->json, "Print one JSON object");
  cmd->callback([&action, args] { action = [args] { return run_bench_tokenize(*args); }; });
}

}  // namespace qtune::cli
