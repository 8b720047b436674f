#pragma once
// The Jinja chat templates real models ship, each with the named template of data/chat_template.h (and its options)
// that renders it token for token as transformers' apply_chat_template does. data/chat_template_match.h compares a
// model's own template with these. The texts are the models' tokenizer_config.json chat_template on the Hugging Face
// hub; tests/oracle/chat_templates/ keeps the newer families' as files, which the oracle renders with transformers.
#include <vector>

#include "qtune/data/chat_template.h"

namespace qtune::data {

struct KnownChatTemplate {
  const char* name;  // the named template and whose Jinja this is: "gemma (Gemma 3)"
  ChatTemplate kind;
  // "{SYSTEM}" where the template writes its default system prompt (the same text at every place it appears).
  const char* jinja;
  SystemMessage system = SystemMessage::Rendered;
  bool closing_eos = false;
};

const std::vector<KnownChatTemplate>& known_chat_templates();

}  // namespace qtune::data
