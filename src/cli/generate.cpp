// qtune generate MODEL --prompt TEXT: stream a continuation to stdout. --chat QUESTION: the model's chat template
// around the question (its generation prompt), the reply streamed until the template's end-of-turn token.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>

#include "commands.h"
#include "model_options.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/eval/generate.h"
#include "qtune/io/generation_config.h"

namespace qtune::cli {
namespace {

struct GenerateArgs {
  ModelOptions model;
  std::string prompt;
  std::string chat, system, chat_template = "auto";
  eval::GenerateOptions options;
  bool no_bos = false;
  bool ignore_eos = false;
  // Which sampling options the command line gave (the others come from generation_config.json when it has them).
  bool temperature_given = false, top_p_given = false, top_k_given = false, max_new_tokens_given = false;
};

// Stop ids and sampling defaults from the model's generation_config.json, as transformers' generate() takes them:
// its eos list (else config.json's, else the tokenizer's EOS); do_sample false means greedy, true samples with its
// temperature / top_p / top_k (transformers' defaults 1.0 / 1.0 / 50 where it names none).
void apply_generation_config(const GenerateArgs& args, const nn::CausalLMImpl& model, const data::Tokenizer& tokenizer,
                             eval::GenerateOptions& options) {
  const auto gen = io::GenerationConfig::load(args.model.dir);
  if (!args.ignore_eos) {
    options.stop_ids = gen && !gen->eos_token_ids.empty() ? gen->eos_token_ids : model.config().eos_token_ids;
    if (options.stop_ids.empty()) options.stop_ids.push_back(tokenizer.eos_id());
  }
  if (!gen) return;
  auto& s = options.sampling;
  if (!args.temperature_given) s.temperature = gen->do_sample ? gen->temperature.value_or(1.0) : 0.0;
  if (!args.top_p_given && gen->do_sample) s.top_p = gen->top_p.value_or(1.0);
  if (!args.top_k_given && gen->do_sample) s.top_k = gen->top_k.value_or(50);
  if (!args.max_new_tokens_given && gen->max_new_tokens) options.max_new_tokens = *gen->max_new_tokens;
  fmt::print(stderr, "generation_config.json: stop at [{}]; {}\n", fmt::join(options.stop_ids, ", "),
             s.temperature < eval::kGreedyBelow
                 ? std::string("greedy")
                 : fmt::format("sampling at temperature {}, top_p {}, top_k {}", s.temperature, s.top_p, s.top_k));
}

// The chat prompt for one question, and the template's end-of-turn token as one more stop id.
std::vector<int64_t> chat_prompt(const GenerateArgs& args, const data::Tokenizer& tokenizer,
                                 eval::GenerateOptions& options) {
  const auto format = data::resolve_chat_format(args.chat_template, args.model.dir, tokenizer);
  data::Record r;
  r.source = "--chat";
  if (!args.system.empty()) r.messages.push_back({"system", args.system});
  r.messages.push_back({"user", args.chat});
  if (!args.ignore_eos)
    if (auto id = data::end_of_turn_id(format, tokenizer)) options.stop_ids.push_back(*id);
  fmt::print(stderr, "chat template: {}{}\n", format.describe(),
             format.default_system ? fmt::format(" (default system prompt: \"{}\")", *format.default_system) : "");
  return data::prompt_ids(r, format, tokenizer);
}

int run_generate(const GenerateArgs& args) {
  auto [model, tokenizer] = args.model.load();
  auto options = args.options;
  apply_generation_config(args, *model, tokenizer, options);
  const bool chat = !args.chat.empty();
  auto prompt = chat ? chat_prompt(args, tokenizer, options)
                     : tokenizer.encode(args.prompt, /*add_bos=*/tokenizer.adds_bos() && !args.no_bos);
  eval::TextStreamer streamer(tokenizer, prompt);
  if (!chat) fmt::print("{}", args.prompt);
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
  auto* prompt = cmd->add_option("--prompt,-p", args->prompt, "Text to continue");
  auto* chat = cmd->add_option("--chat,-c", args->chat, "A question, asked through the model's chat template");
  prompt->excludes(chat);
  cmd->add_option("--system", args->system, "--chat: a system message (default: the template's own, if any)");
  cmd->add_option("--template", args->chat_template,
                  std::string("--chat: auto (the model's own) or one of ") + data::kChatTemplateNames)
      ->capture_default_str();
  auto* max_new = cmd->add_option("--max-new-tokens,-n", args->options.max_new_tokens, "Most tokens to generate")
                      ->capture_default_str()->check(CLI::PositiveNumber);
  auto* temperature = cmd->add_option("--temperature,-t", args->options.sampling.temperature,
                                      "0 = greedy; > 0 samples (default: generation_config.json's, else greedy)")
                          ->capture_default_str()->check(CLI::NonNegativeNumber);
  auto* top_p = cmd->add_option("--top-p", args->options.sampling.top_p, "Nucleus sampling mass (1 = off)")
                    ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  auto* top_k = cmd->add_option("--top-k", args->options.sampling.top_k, "Keep the k most likely tokens (0 = off)")
                    ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", args->options.sampling.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_flag("--no-bos", args->no_bos, "Do not prepend the BOS token to the prompt");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Keep generating past the end-of-sequence token");
  cmd->callback([&action, args, prompt, chat, max_new, temperature, top_p, top_k] {
    if (prompt->count() == 0 && chat->count() == 0) throw CLI::RequiredError("--prompt or --chat");
    args->max_new_tokens_given = max_new->count() > 0;
    args->temperature_given = temperature->count() > 0;
    args->top_p_given = top_p->count() > 0;
    args->top_k_given = top_k->count() > 0;
    action = [args] { return run_generate(*args); };
  });
}

}  // namespace qtune::cli
