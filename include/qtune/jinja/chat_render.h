#pragma once
// A model's chat template applied to a conversation as transformers' apply_chat_template does: the variables
// render_jinja_template passes (messages with their reasoning fields aliased, tools, documents,
// add_generation_prompt, the tokenizer's special tokens, any extra keyword such as enable_thinking), and where the
// assistant's text lies in the result: the template's `{% generation %}` blocks (return_assistant_tokens_mask) when
// it has them, else the prefix method TRL and the peers use (messages[:i] rendered with a generation prompt must be
// a prefix of messages[:i+1]; the text between them is the reply, its end-of-turn marker included).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qtune/jinja/template.h"

namespace qtune::jinja {

struct ChatInput {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;      // null: none
  nlohmann::ordered_json documents;  // null: none
  bool add_generation_prompt = false;
  // bos_token, eos_token ... and extra variables (enable_thinking); later keys win, as keyword arguments do.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

class ChatRenderer {
 public:
  ChatRenderer(const std::string& jinja, const std::string& source) : template_(jinja, source) {}

  Rendered render(const ChatInput& in, const RenderLimits& limits = {}) const;

  // The byte ranges of the assistant's replies in render(in).text; `record` names the conversation in errors.
  std::vector<GenerationSpan> assistant_spans(const ChatInput& in, const std::string& record) const;

  const Template& jinja() const { return template_; }

 private:
  Template template_;
};

// transformers' _alias_reasoning_fields: a message's reasoning (reasoning_content, thinking or reasoning) is passed
// as both `thinking` and `reasoning_content`.
nlohmann::ordered_json alias_reasoning_fields(const nlohmann::ordered_json& messages);

}  // namespace qtune::jinja
