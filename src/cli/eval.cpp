// qtune eval MODEL_DIR --text FILE: perplexity of a text file.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>

#include "commands.h"
#include "model_options.h"
#include "qtune/data/text_file.h"
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
};

int run_eval(const EvalArgs& args) {
  auto [model, tokenizer] = args.model.load();
  const std::string text = data::read_text_file(args.text_file, "--text");
  const int64_t seq_len = args.seq_len > 0 ? args.seq_len : std::min<int64_t>(model->config().max_position_embeddings, 2048);
  const auto t0 = std::chrono::steady_clock::now();
  eval::PerplexityResult result;
  std::string mode;
  int64_t documents = 0;
  if (!args.split_on.empty()) {
    std::vector<std::vector<int64_t>> docs;
    for (const auto& doc : data::split_documents(text, args.split_on)) docs.push_back(tokenizer.encode(doc, /*add_bos=*/true));
    if (docs.empty()) fail("{}: no text between the --split-on separators", args.text_file);
    documents = static_cast<int64_t>(docs.size());
    result = eval::document_perplexity(*model, docs, seq_len);
    mode = fmt::format("{} documents, each from BOS, truncated to {} tokens", documents, seq_len);
  } else {
    const auto ids = tokenizer.encode(text, /*add_bos=*/true);
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
  auto* cmd = app.add_subcommand("eval", "Perplexity of a text file under the model");
  auto args = std::make_shared<EvalArgs>();
  args->model.add_to(*cmd);
  cmd->add_option("--text", args->text_file, "UTF-8 text file to score")->required();
  cmd->add_option("--seq-len", args->seq_len, "Window length in tokens (default: the model's context, at most 2048)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--stride", args->stride, "Window step in tokens (default: seq-len / 2)")->check(CLI::PositiveNumber);
  cmd->add_option("--split-on", args->split_on,
                  "Score each document between these separators on its own, from BOS (e.g. '<|endoftext|>')");
  cmd->add_flag("--json", args->json, "Print one JSON object instead of text");
  cmd->callback([&action, args] { action = [args] { return run_eval(*args); }; });
}

}  // namespace qtune::cli
