#include "qtune/data/chat_template_match.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "qtune/io/gguf.h"
#include "qtune/io/json_file.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::data {
namespace {

namespace fs = std::filesystem;

// A known Jinja template: its source with "{SYSTEM}" where a default system prompt is written (at most once).
// Sources as the models ship them (tokenizer_config.json on the Hugging Face hub, or the GGUF's metadata).
struct KnownTemplate {
  const char* name;
  ChatTemplate kind;
  const char* jinja;
};

const KnownTemplate kKnown[] = {
    // SmolLM2-*-Instruct: ChatML, with a default system prompt when the conversation has none.
    {"chatml (SmolLM2)", ChatTemplate::ChatML,
     "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
     "{SYSTEM}<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
     "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"},
    // Plain ChatML (OpenHermes, many community fine-tunes).
    {"chatml", ChatTemplate::ChatML,
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
     "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"},
    // Meta-Llama-3-8B-Instruct.
    {"llama3", ChatTemplate::Llama3,
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
     "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
     "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"},
    // Llama-2-*-chat.
    {"llama2", ChatTemplate::Llama2,
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
     "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
     "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
     "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
     "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
     "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
     "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
     "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"},
    // Mistral-7B-Instruct-v0.1 / v0.2.
    {"mistral", ChatTemplate::Mistral,
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
     "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
     "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
     "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
     "are supported!') }}{% endif %}{% endfor %}"},
};

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

// `jinja` equals `known` with some text (not containing a quote) in place of "{SYSTEM}": that text, or nullopt.
std::optional<std::optional<std::string>> match(const std::string& jinja, const std::string& known) {
  const auto at = known.find("{SYSTEM}");
  if (at == std::string::npos) {
    if (jinja == known) return std::optional<std::string>{};
    return std::nullopt;
  }
  const std::string before = known.substr(0, at), after = known.substr(at + 8);
  if (jinja.size() < before.size() + after.size() || jinja.compare(0, before.size(), before) != 0 ||
      jinja.compare(jinja.size() - after.size(), after.size(), after) != 0)
    return std::nullopt;
  auto system = jinja.substr(before.size(), jinja.size() - before.size() - after.size());
  if (system.find('\'') != std::string::npos || system.find('{') != std::string::npos) return std::nullopt;
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
  for (const auto& known : kKnown) {
    if (auto system = match(jinja, canonical(known.jinja))) {
      ChatFormat f(known.kind);
      f.default_system = *system;
      return f;
    }
  }
  std::string names;
  for (const auto& known : kKnown) names += std::string(names.empty() ? "" : ", ") + known.name;
  fail("{}: the model's chat template is not one qtune knows ({}); set data.chat_template (or --template) to the "
       "named template that renders it (one of {})",
       t.source, names, kChatTemplateNames);
}

ChatFormat resolve_chat_format(const std::string& setting, const std::string& model_path, const Tokenizer& tok) {
  ChatFormat f;
  if (setting == "auto") {
    const auto found = find_model_chat_template(model_path);
    if (!found)
      fail("{}: the chat template is auto but the model has no chat template (chat_template.jinja, "
           "tokenizer_config.json or the GGUF's tokenizer.chat_template); set it (data.chat_template in a recipe, "
           "--template on the command line) to one of {}",
           model_path, kChatTemplateNames);
    f = match_chat_template(*found);
  } else {
    f = ChatFormat(parse_chat_template(setting));
  }
  switch (f.kind) {
    case ChatTemplate::ChatML: f.markers_are_tokens = tok.token_id("<|im_start|>") && tok.token_id("<|im_end|>"); break;
    case ChatTemplate::Llama3:
      f.markers_are_tokens = tok.token_id("<|start_header_id|>") && tok.token_id("<|end_header_id|>") && tok.token_id("<|eot_id|>");
      break;
    default: break;
  }
  return f;
}

}  // namespace qtune::data
