// qtune eval MODEL_DIR --text FILE: perplexity of a text file.
// qtune eval MODEL_DIR --data FILE.jsonl [--exact-match]: loss on the trained tokens of a dataset, and answers checked.
// qtune eval MODEL_DIR [--adapter DIR] --preference PAIRS.jsonl: preference accuracy and margin on held-out pairs.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "commands.h"
#include "model_options.h"
#include "qtune/data/chat_template.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/data/collate.h"
#include "qtune/data/preference.h"
#include "qtune/data/records.h"
#include "qtune/data/text_file.h"
#include "qtune/eval/exact_match.h"
#include "qtune/lora/adapter_switch.h"
#include "qtune/lora/inject.h"
#include "qtune/train/objectives/sequence_logps.h"
#include "qtune/train/trainer.h"
#include "qtune/eval/perplexity.h"
#include "qtune/util/error.h"

namespace qtune::cli {
namespace {

struct EvalArgs {
  ModelOptions model;
  std::string text_file;
  int64_t seq_len = 0;
  int64_t stride = 0;
  std::string split_on;
  bool json = false;
  std::string preference_file;
  double beta = 0.1;
  // --data mode
  std::string data_file, format = "alpaca-jsonl", chat_template = "auto";
  bool exact = false;
  int64_t max_new_tokens = 32, show = 3, limit = 0;
};

// The "category" field of each JSONL line (empty when absent), to group exact-match counts.
std::vector<std::string> categories_of(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(data::read_text_file(path, "--data"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    out.push_back(j.is_object() && j.contains("category") && j["category"].is_string() ? j["category"].get<std::string>() : "");
  }
  return out;
}

int run_data_eval(const EvalArgs& args) {
  auto [model, tokenizer] = args.model.load();
  auto records = data::read_records(args.data_file, data::parse_data_format(args.format));
  auto categories = categories_of(args.data_file);
  if (args.limit > 0 && static_cast<int64_t>(records.size()) > args.limit) records.resize(args.limit);
  const auto tmpl = data::resolve_chat_format(args.chat_template, args.model.dir, tokenizer);
  const int64_t seq_len = args.seq_len > 0 ? args.seq_len : model->config().max_position_embeddings;
  auto set = data::tokenize_records(records, tmpl, tokenizer, /*train_on_prompt=*/false, seq_len);
  if (set.samples.empty())
    fail("{}: none of its {} records has an answer token within {} tokens (--seq-len): nothing to score", args.data_file,
         records.size(), seq_len);
  data::LoaderOptions lo;
  lo.batch_size = 8;
  lo.max_seq_len = seq_len;
  lo.shuffle = false;
  data::DataLoader loader(std::move(set.samples), lo, tokenizer.pad_id().value_or(tokenizer.eos_id()));
  const auto loss = train::evaluate(*model, loader);
  nlohmann::json j = {{"file", args.data_file}, {"records", records.size()}, {"loss", loss.loss},
                      {"perplexity", loss.perplexity}, {"target_tokens", loss.tokens},
                      {"truncated", set.truncated}, {"dropped", set.dropped}, {"seq_len", seq_len}};
  if (!args.json) {
    fmt::print("{}: {} records; loss on the answer tokens {:.4f} (perplexity {:.3f}, {} tokens)\n", args.data_file,
               records.size(), loss.loss, loss.perplexity, loss.tokens);
    // As train reports them: a cut or dropped record changes what the loss measures.
    if (set.truncated > 0 || set.dropped > 0)
      fmt::print("{} records truncated to {} tokens (--seq-len), {} dropped (no answer token left in the window)\n",
                 set.truncated, seq_len, set.dropped);
  }
  if (args.exact) {
    const auto em = eval::exact_match(*model, tokenizer, records, tmpl, args.max_new_tokens, categories);
    j["exact_match"] = em.rate();
    j["correct"] = em.correct;
    for (const auto& [cat, ct] : em.by_category)
      if (!cat.empty()) j["by_category"][cat] = {{"correct", ct.first}, {"total", ct.second}};
    if (!args.json) {
      fmt::print("exact match {}/{} = {:.1f}%", em.correct, em.total, 100.0 * em.rate());
      if (em.by_category.size() > 1 || !em.by_category.begin()->first.empty()) {
        fmt::print(" (");
        bool first = true;
        for (const auto& [cat, ct] : em.by_category)
          fmt::print("{}{} {}/{}", first ? "" : ", ", cat, ct.first, ct.second), first = false;
        fmt::print(")");
      }
      fmt::print("\n");
      for (int64_t i = 0; i < std::min<int64_t>(args.show, em.checks.size()); ++i) {
        const auto& c = em.checks[i];
        fmt::print("--- example {}: {}\n{}\n>>> model: {}\n>>> expected: {}\n", i + 1, c.correct ? "correct" : "wrong",
                   c.prompt, c.got, c.expected);
      }
    }
  }
  if (args.json) fmt::print("{}\n", j.dump());
  return 0;
}

// Preference pairs: how often the model prefers the chosen answer (log p(chosen) > log p(rejected)) and by how much;
// with an adapter also DPO's implicit rewards against the base with the adapter off (TRL's rewards/accuracies and
// rewards/margins at beta).
int run_preference_eval(const EvalArgs& args) {
  auto [model, tokenizer] = args.model.load();
  const auto records = data::read_preference_records(args.preference_file);
  const bool conversational =
      std::any_of(records.begin(), records.end(), [](const data::PreferenceRecord& r) { return r.conversational; });
  const auto format = conversational ? data::resolve_chat_format(args.chat_template, args.model.dir, tokenizer)
                                     : data::ChatFormat(data::ChatTemplate::None);
  const int64_t seq_len = args.seq_len > 0 ? args.seq_len : model->config().max_position_embeddings;
  const data::PreferenceLimits limits{0, seq_len, false};
  std::vector<data::TokenizedSample> rows;
  for (const auto& r : records) {
    auto [chosen, rejected] = data::preference_rows(data::tokenize_preference(r, format, tokenizer, limits), limits);
    rows.push_back(std::move(chosen));
    rows.push_back(std::move(rejected));
  }
  data::LoaderOptions lo;
  lo.batch_size = 4;
  lo.max_seq_len = seq_len;
  lo.shuffle = false;
  lo.rows_per_sample = 2;
  data::DataLoader loader(std::move(rows), lo, tokenizer.pad_id().value_or(tokenizer.eos_id()));
  const bool adapted = !lora::lora_layers(*model).empty();
  torch::NoGradGuard no_grad;
  model->eval();
  int64_t pairs = 0, preferred = 0, rewarded = 0;
  double margin = 0, reward_margin = 0;
  for (int64_t i = 0; i < loader.batches_per_epoch(0); ++i) {
    const auto b = loader.batch(0, i);
    const auto policy = train::sequence_logps(*model, b).logps.view({-1, 2});
    const auto gap = policy.select(1, 0) - policy.select(1, 1);
    pairs += gap.size(0);
    preferred += (gap > 0).sum().item<int64_t>();
    margin += gap.sum().item<double>();
    if (!adapted) continue;
    at::Tensor reference;
    {
      lora::AdaptersDisabled base(*model);
      reference = train::sequence_logps(*model, b).logps.view({-1, 2});
    }
    const auto rewards = args.beta * (gap - (reference.select(1, 0) - reference.select(1, 1)));
    rewarded += (rewards > 0).sum().item<int64_t>();
    reward_margin += rewards.sum().item<double>();
  }
  const double n = static_cast<double>(pairs);
  nlohmann::json j = {{"file", args.preference_file}, {"pairs", pairs}, {"accuracy", preferred / n},
                      {"margin", margin / n}};
  if (adapted) j["rewards/accuracies"] = rewarded / n, j["rewards/margins"] = reward_margin / n, j["beta"] = args.beta;
  if (args.json) {
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("{}: {} pairs; the chosen answer is the likelier in {} ({:.1f}%), by {:.4f} nats on average "
             "(log p(chosen) - log p(rejected))\n",
             args.preference_file, pairs, preferred, 100.0 * preferred / n, margin / n);
  if (adapted)
    fmt::print("against the base (adapter off), beta {}: rewards/accuracies {:.4f}, rewards/margins {:.4f}\n", args.beta,
               rewarded / n, reward_margin / n);
  return 0;
}

int run_eval(const EvalArgs& args) {
  if (!args.preference_file.empty()) return run_preference_eval(args);
  if (!args.data_file.empty()) return run_data_eval(args);
  if (args.text_file.empty()) fail("qtune eval: give --text FILE (perplexity) or --data FILE (a dataset's answers)");
  auto [model, tokenizer] = args.model.load();
  const std::string text = data::read_text_file(args.text_file, "--text");
  const int64_t seq_len = args.seq_len > 0 ? args.seq_len : std::min<int64_t>(model->config().max_position_embeddings, 2048);
  const auto t0 = std::chrono::steady_clock::now();
  eval::PerplexityResult result;
  std::string mode;
  int64_t documents = 0;
  if (!args.split_on.empty()) {
    std::vector<std::vector<int64_t>> docs;
    for (const auto& doc : data::split_documents(text, args.split_on)) docs.push_back(tokenizer.encode(doc));
    if (docs.empty()) fail("{}: no text between the --split-on separators", args.text_file);
    documents = static_cast<int64_t>(docs.size());
    result = eval::document_perplexity(*model, docs, seq_len);
    mode = fmt::format("{} documents, each from BOS, truncated to {} tokens", documents, seq_len);
  } else {
    const auto ids = tokenizer.encode(text);
    const int64_t stride = args.stride > 0 ? args.stride : std::max<int64_t>(1, seq_len / 2);
    result = eval::sliding_window_perplexity(*model, ids, seq_len, stride);
    mode = fmt::format("sliding window {} tokens, stride {}", seq_len, stride);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (args.json) {
    nlohmann::json j = {{"file", args.text_file},        {"perplexity", result.perplexity()},
                        {"mean_nll", result.mean_nll()}, {"nll_sum", result.nll_sum},
                        {"predicted_tokens", result.predicted_tokens}, {"documents", documents},
                        {"seconds", secs}};
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("{}: {}\n", args.text_file, mode);
    fmt::print("perplexity {:.4f}  (mean NLL {:.5f} nats over {} predicted tokens, {:.0f} tokens/s)\n",
               result.perplexity(), result.mean_nll(), result.predicted_tokens, result.predicted_tokens / secs);
  }
  return 0;
}

}  // namespace

void add_eval(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("eval", "Perplexity of a text file, or loss and exact-match answers on a dataset");
  auto args = std::make_shared<EvalArgs>();
  args->model.add_to(*cmd);
  cmd->add_option("--text", args->text_file, "UTF-8 text file to score");
  cmd->add_option("--data", args->data_file, "A dataset (JSONL): loss on its answer tokens, and --exact-match");
  cmd->add_option("--preference", args->preference_file,
                  "Preference pairs (JSONL, TRL's keys): how often and by how much the model prefers the chosen answer; "
                  "with --adapter also DPO's rewards against the base");
  cmd->add_option("--beta", args->beta, "--preference: DPO's beta for the rewards")->capture_default_str();
  cmd->add_option("--format", args->format, "--data format: alpaca-jsonl | chat-jsonl")->capture_default_str();
  cmd->add_option("--template", args->chat_template,
                  std::string("--data chat template: auto (the model's own) or one of ") + data::kChatTemplateNames)
      ->capture_default_str();
  cmd->add_flag("--exact-match", args->exact, "Generate each answer greedily and compare it with the expected one");
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "Longest generated answer")->capture_default_str();
  cmd->add_option("--show", args->show, "Examples to print")->capture_default_str();
  cmd->add_option("--limit", args->limit, "Use only the first N records");
  cmd->add_option("--seq-len", args->seq_len, "Window length in tokens (default: the model's context, at most 2048)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--stride", args->stride, "Window step in tokens (default: seq-len / 2)")->check(CLI::PositiveNumber);
  cmd->add_option("--split-on", args->split_on,
                  "Score each document between these separators on its own, from BOS (e.g. '<|endoftext|>')");
  cmd->add_flag("--json", args->json, "Print one JSON object instead of text");
  cmd->callback([&action, args] { action = [args] { return run_eval(*args); }; });
}

}  // namespace qtune::cli
