// qtune generate MODEL_DIR --prompt TEXT: stream a continuation to stdout.
#include <fmt/format.h>

#include <cstdio>

#include "commands.h"
#include "model_options.h"
#include "qtune/eval/generate.h"

namespace qtune::cli {
namespace {

struct GenerateArgs {
  ModelOptions model;
  std::string prompt;
  eval::GenerateOptions options;
  bool no_bos = false;
  bool ignore_eos = false;
};

int run_generate(const GenerateArgs& args) {
  auto [model, tokenizer] = args.model.load();
  auto prompt = tokenizer.encode(args.prompt, /*add_bos=*/!args.no_bos);
  auto options = args.options;
  if (!args.ignore_eos) {
    options.stop_ids = model->config().eos_token_ids;
    if (options.stop_ids.empty()) options.stop_ids.push_back(tokenizer.eos_id());
  }
  eval::TextStreamer streamer(tokenizer, prompt);
  fmt::print("{}", args.prompt);
  std::fflush(stdout);
  auto result = eval::generate(*model, prompt, options, [&](int64_t token) {
    fmt::print("{}", streamer.push(token));
    std::fflush(stdout);
  });
  fmt::print("{}\n", streamer.finish());
  std::fflush(stdout);
  fmt::print(stderr, "[{} prompt tokens, {} new tokens, stop: {}; prefill {:.3f}s, decode {:.1f} tokens/s]\n",
             prompt.size(), result.tokens.size(), result.stop_reason, result.prefill_seconds,
             result.decode_tokens_per_second());
  return 0;
}

}  // namespace

void add_generate(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("generate", "Continue a prompt with the model, streaming tokens to stdout");
  auto args = std::make_shared<GenerateArgs>();
  args->model.add_to(*cmd);
  cmd->add_option("--prompt,-p", args->prompt, "Text to continue")->required();
  cmd->add_option("--max-new-tokens,-n", args->options.max_new_tokens, "Most tokens to generate")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--temperature,-t", args->options.sampling.temperature, "0 = greedy; > 0 samples")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", args->options.sampling.top_p, "Nucleus sampling mass (1 = off)")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--top-k", args->options.sampling.top_k, "Keep the k most likely tokens (0 = off)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", args->options.sampling.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_flag("--no-bos", args->no_bos, "Do not prepend the BOS token to the prompt");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Keep generating past the end-of-sequence token");
  cmd->callback([&action, args] { action = [args] { return run_generate(*args); }; });
}

}  // namespace qtune::cli
