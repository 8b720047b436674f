#include "qtune/data/chat_template_match.h"
#include "qtune/jinja/chat_render.h"

#include "qtune/io/hf_config.h"

#include <nlohmann/json.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "qtune/data/chat_template_known.h"
#include "qtune/io/gguf.h"
#include "qtune/io/json_file.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::data {
namespace {

namespace fs = std::filesystem;

// Jinja string literals spell a newline either as "\n" (escaped in JSON, so two characters in the template) or as a
// real newline (GGUF writers); both render the same. Surrounding whitespace renders nothing under transformers'
// trim_blocks at the ends that matter here.
std::string canonical(std::string s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') {
      out += '\n';
      ++i;
    } else {
      out += s[i];
    }
  }
  return strip(out, " \t\r\n");
}

// `jinja` equals `known` with one text in place of every "{SYSTEM}": that text (an empty optional inside when `known`
// has no "{SYSTEM}"), or nullopt. The text sits inside a Jinja string literal, so it may hold no quote, backslash
// (an escape would render otherwise) or brace.
std::optional<std::optional<std::string>> match(const std::string& jinja, const std::string& known) {
  static const std::string kPlaceholder = "{SYSTEM}";
  const auto at = known.find(kPlaceholder);
  if (at == std::string::npos) {
    if (jinja == known) return std::optional<std::string>{};
    return std::nullopt;
  }
  if (jinja.compare(0, at, known, 0, at) != 0) return std::nullopt;
  // The text ends where the template goes on as after the placeholder (up to the next one, or to the end).
  const auto next = known.find(kPlaceholder, at + kPlaceholder.size());
  const std::string after = known.substr(at + kPlaceholder.size(),
                                         next == std::string::npos ? std::string::npos : next - at - kPlaceholder.size());
  const auto end = after.empty() ? jinja.size() : jinja.find(after, at);
  if (end == std::string::npos) return std::nullopt;
  const std::string system = jinja.substr(at, end - at);
  if (system.find_first_of("'\\{") != std::string::npos) return std::nullopt;
  std::string expected = known;
  for (auto p = expected.find(kPlaceholder); p != std::string::npos; p = expected.find(kPlaceholder, p + system.size()))
    expected.replace(p, kPlaceholder.size(), system);
  if (expected != jinja) return std::nullopt;
  return std::optional<std::string>(system);
}

}  // namespace

std::optional<ModelChatTemplate> find_model_chat_template(const std::string& model_path) {
  if (io::is_gguf_path(model_path)) {
    const auto f = io::GgufFile::open(model_path);
    if (auto t = f->string("tokenizer.chat_template")) return ModelChatTemplate{*t, model_path + " (tokenizer.chat_template)"};
    return std::nullopt;
  }
  const fs::path dir = fs::is_directory(model_path) ? fs::path(model_path) : fs::path(model_path).parent_path();
  if (fs::exists(dir / "chat_template.jinja")) {
    std::ifstream in(dir / "chat_template.jinja");
    return ModelChatTemplate{std::string(std::istreambuf_iterator<char>(in), {}), (dir / "chat_template.jinja").string()};
  }
  if (!fs::exists(dir / "tokenizer_config.json")) return std::nullopt;
  const auto file = (dir / "tokenizer_config.json").string();
  const auto j = io::read_json_file(file);
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return ModelChatTemplate{it->get<std::string>(), file + " (chat_template)"};
  if (it->is_array()) {
    for (const auto& entry : *it)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        return ModelChatTemplate{entry["template"].get<std::string>(), file + " (chat_template, \"default\")"};
    fail("{}: chat_template is a list without a \"default\" entry", file);
  }
  fail("{}: chat_template must be a string or a list of {{name, template}}", file);
}

ChatFormat match_chat_template(const ModelChatTemplate& t) {
  const auto jinja = canonical(t.jinja);
  for (const auto& known : known_chat_templates()) {
    if (auto system = match(jinja, canonical(known.jinja))) {
      ChatFormat f(known.kind);
      f.default_system = *system;
      f.system = known.system;
      f.closing_eos = known.closing_eos;
      return f;
    }
  }
  std::string names;
  for (const auto& known : known_chat_templates()) names += std::string(names.empty() ? "" : ", ") + known.name;
  fail("{}: the model's chat template is not one qtune knows ({}); set data.chat_template (or --template) to the "
       "named template that renders it (one of {})",
       t.source, names, kChatTemplateNames);
}

namespace {

// "gemma" when the model at `model_path` is a Gemma whose files hold no chat template, else "".
std::string family_without_template(const std::string& model_path) {
  try {
    const auto type = io::ModelConfig::load(model_path).model_type;
    return type == "gemma2" || type == "gemma3_text" ? "gemma" : "";
  } catch (const Error&) {
    return "";  // not a model qtune reads (a tokenizer directory): the error below names what is missing
  }
}

}  // namespace

namespace {

// The template rendered by qtune's Jinja interpreter, with the tokenizer's special tokens as its variables.
ChatFormat jinja_format(const ModelChatTemplate& t, const Tokenizer& tok) {
  ChatFormat f(ChatTemplate::None);
  f.jinja = std::make_shared<const jinja::ChatRenderer>(t.jinja, t.source);
  auto put = [&](const char* name, int64_t id) {
    if (id >= 0 && id < tok.vocab_size()) f.jinja_vars[name] = tok.piece(id);
  };
  put("bos_token", tok.bos_id());
  put("eos_token", tok.eos_id());
  put("unk_token", tok.unk_id());
  if (tok.pad_id()) put("pad_token", *tok.pad_id());
  return f;
}

}  // namespace

ChatFormat resolve_chat_format(const std::string& setting, const std::string& model_path, const Tokenizer& tok) {
  ChatFormat f;
  if (ends_with(setting, ".jinja")) {
    std::ifstream in(setting, std::ios::binary);
    if (!in) fail("data.chat_template {}: the template file cannot be read", setting);
    return jinja_format({std::string(std::istreambuf_iterator<char>(in), {}), setting}, tok);
  }
  if (setting == "auto") {
    const auto found = find_model_chat_template(model_path);
    if (!found && family_without_template(model_path) == "gemma") {
      // Google's Gemma GGUFs (Gemma 3 270M's among them) carry no template; their family has one.
      fmt::print(stderr, "note: {} has no chat template; using its family's, gemma\n", model_path);
      f = ChatFormat(ChatTemplate::Gemma);
    } else if (!found) {
      fail("{}: the chat template is auto but the model has no chat template (chat_template.jinja, "
           "tokenizer_config.json or the GGUF's tokenizer.chat_template); set it (data.chat_template in a recipe, "
           "--template on the command line) to one of {}",
           model_path, kChatTemplateNames);
    } else {
      // A template a named one renders identically keeps it (the replies of Qwen3's multi-turn conversations, whose
      // template rewrites earlier turns, are found there); any other is rendered by the Jinja interpreter.
      bool named = false;
      for (const auto& known : known_chat_templates())
        if (match(canonical(found->jinja), canonical(known.jinja))) named = true;
      if (!named) return jinja_format(*found, tok);
      f = match_chat_template(*found);
      const auto own = jinja_format(*found, tok);
      f.model_jinja = own.jinja;
      f.jinja_vars = own.jinja_vars;
    }
  } else {
    f = ChatFormat(parse_chat_template(setting));
  }
  const auto markers = marker_tokens(f.kind);
  std::vector<std::string> missing;
  for (const auto& m : markers)
    if (!tok.token_id(m)) missing.push_back(m);
  f.markers_are_tokens = !markers.empty() && missing.empty();
  // ChatML and Llama 3 frame the conversation with BOS/EOS ids instead (a SentencePiece vocabulary without the
  // markers); the newer families' templates are rendered as their Jinja writes them all the same.
  const bool has_fallback = f.kind == ChatTemplate::ChatML || f.kind == ChatTemplate::Llama3;
  if (!missing.empty() && !has_fallback)
    fmt::print(stderr,
               "warning: {}: the tokenizer has no token {}: the {} template's markers are tokenized as text, and "
               "generation cannot stop at the end of a turn\n",
               tok.path(), fmt::join(missing, ", "), chat_template_name(f.kind));
  return f;
}

}  // namespace qtune::data
