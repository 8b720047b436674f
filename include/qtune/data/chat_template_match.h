#pragma once
// The model's own chat template (the Jinja text transformers renders with apply_chat_template) and the named
// template of data/chat_template.h that renders it identically. qtune has no Jinja engine: it knows the templates
// real models ship, each as a pattern over the Jinja source (with the default system prompt as a parameter), and
// refuses any other template, naming the file and the templates it knows.
#include <optional>
#include <string>

#include "qtune/data/chat_template.h"
#include "qtune/data/tokenizer.h"

namespace qtune::data {

struct ModelChatTemplate {
  std::string jinja;
  std::string source;  // "DIR/tokenizer_config.json (chat_template)", "FILE.gguf (tokenizer.chat_template)", ...
};

// Looks where transformers looks: chat_template.jinja, then tokenizer_config.json's chat_template (a string, or the
// list of {name, template} whose "default" entry is used); a .gguf path reads tokenizer.chat_template.
std::optional<ModelChatTemplate> find_model_chat_template(const std::string& model_path);

// The named template that renders `t` identically, with its parameters (the default system prompt).
ChatFormat match_chat_template(const ModelChatTemplate& t);

// data.chat_template as a run uses it: "auto" is the model's own template (an error naming the model when it has
// none), a name is that template. markers_are_tokens comes from the tokenizer either way.
ChatFormat resolve_chat_format(const std::string& setting, const std::string& model_path, const Tokenizer& tok);

}  // namespace qtune::data
