// qtune template MODEL_OR_TEMPLATE --messages FILE.json [--tools FILE.json] [--add-generation-prompt]
// [--var NAME=VALUE]... [--ids] [--assistant-mask]: the exact text a chat template renders for a conversation, as
// transformers' apply_chat_template renders it (qtune's Jinja interpreter), or its token ids (tokenize=True: the
// text tokenized as is, no BOS added), or the assistant mask over those ids (return_assistant_tokens_mask where the
// template marks {% generation %}, else the prefix method).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/data/tokenizer.h"
#include "qtune/jinja/chat_render.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::cli {
namespace {

using json = nlohmann::ordered_json;

struct TemplateArgs {
  std::string model, messages, tools;
  std::vector<std::string> vars;
  bool add_generation_prompt = false, ids = false, mask = false;
};

json read_json(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{} {}: cannot be read", flag, path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("{} {}: not JSON ({})", flag, path, e.what());
  }
}

int run_template(const TemplateArgs& a) {
  const bool is_jinja_file = ends_with(a.model, ".jinja") && std::filesystem::is_regular_file(a.model);
  std::string text, source;
  std::optional<data::Tokenizer> tok;
  if (is_jinja_file) {
    std::ifstream in(a.model, std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), {});
    source = a.model;
  } else {
    const auto t = data::find_model_chat_template(a.model);
    if (!t) fail("{}: the model has no chat template (chat_template.jinja, tokenizer_config.json's chat_template or "
                 "a GGUF's tokenizer.chat_template); give a .jinja file instead", a.model);
    text = t->jinja;
    source = t->source;
    tok = data::Tokenizer::load(a.model);
  }
  if ((a.ids || a.mask) && !tok) fail("--ids and --assistant-mask need a model's tokenizer, not a .jinja file");

  jinja::ChatInput in;
  json messages = read_json(a.messages, "--messages");
  if (messages.is_object() && messages.contains("messages")) {
    if (messages.contains("tools")) in.tools = messages["tools"];
    messages = json(messages["messages"]);
  }
  if (!messages.is_array()) fail("--messages {}: expected a JSON list of messages ({{\"role\": ..., \"content\": ...}})",
                                 a.messages);
  in.messages = messages;
  if (!a.tools.empty()) in.tools = read_json(a.tools, "--tools");
  in.add_generation_prompt = a.add_generation_prompt;
  if (tok) {
    // The tokenizer's special tokens, as apply_chat_template passes its special_tokens_map.
    auto put = [&](const char* name, int64_t id) {
      if (id >= 0 && id < tok->vocab_size()) in.extra[name] = tok->piece(id);
    };
    put("bos_token", tok->bos_id());
    put("eos_token", tok->eos_id());
    put("unk_token", tok->unk_id());
    if (tok->pad_id()) put("pad_token", *tok->pad_id());
  }
  for (const auto& v : a.vars) {
    const auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0) fail("--var {}: expected NAME=VALUE", v);
    const std::string value = v.substr(eq + 1);
    // A JSON value (true, 3, "x", [..]) is passed as that value, anything else as a string.
    in.extra[v.substr(0, eq)] = json::accept(value) ? json::parse(value) : json(value);
  }

  const jinja::ChatRenderer renderer(text, source);
  const auto rendered = renderer.render(in);
  if (!a.ids && !a.mask) {
    fmt::print("{}", rendered.text);
    return 0;
  }
  const auto ids = tok->encode(rendered.text, false, false);
  if (!a.mask) {
    fmt::print("{}\n", fmt::join(ids, " "));
    return 0;
  }
  // Each token's end in the text, from the decoded prefix (a token belongs to the span its text ends in, as
  // transformers' char_to_token reads the spans' first and last characters).
  const auto spans = renderer.assistant_spans(in, a.messages);
  std::vector<int> mask(ids.size(), 0);
  size_t start = 0;
  for (size_t k = 0; k < ids.size(); ++k) {
    const size_t end = tok->backend().decode(std::vector<int64_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k + 1)), false).size();
    for (const auto& s : spans)
      if (start < s.end && end > s.begin) mask[k] = 1;
    start = end;
  }
  fmt::print("{}\n", fmt::join(mask, " "));
  return 0;
}

}  // namespace

void add_template(CLI::App& app, Action& action) {
  auto args = std::make_shared<TemplateArgs>();
  auto* cmd = app.add_subcommand("template", "Render a conversation with a model's own chat template (or a .jinja file) "
                                             "exactly as transformers' apply_chat_template does");
  cmd->add_option("MODEL_OR_TEMPLATE", args->model, "Model directory, .gguf, or a .jinja template file")->required();
  cmd->add_option("--messages", args->messages, "JSON list of messages (or {\"messages\": [...], \"tools\": [...]})")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--tools", args->tools, "JSON list of tool schemas passed as `tools`")->check(CLI::ExistingFile);
  cmd->add_flag("--add-generation-prompt", args->add_generation_prompt, "End with the assistant's turn opened");
  cmd->add_option("--var", args->vars, "Extra template variable NAME=VALUE (VALUE as JSON when it parses: "
                                       "--var enable_thinking=false)");
  cmd->add_flag("--ids", args->ids, "Print the token ids of the rendered text instead (tokenize=True)");
  cmd->add_flag("--assistant-mask", args->mask,
                "Print the assistant mask over the ids: {% generation %} blocks, else the prefix method");
  cmd->callback([&action, args] { action = [args] { return run_template(*args); }; });
}

}  // namespace qtune::cli
