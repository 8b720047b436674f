#pragma once
// A chat template, parsed once and rendered per conversation: what transformers' apply_chat_template does with
// jinja2, in C++. Variables come as JSON (messages, tools, documents, add_generation_prompt, the special tokens and
// any extra keyword such as enable_thinking).
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "qtune/jinja/evaluator.h"
#include "qtune/jinja/parser.h"

namespace qtune::jinja {

class Template {
 public:
  // `name` names the template in errors: "DIR/tokenizer_config.json (chat_template)".
  Template(const std::string& text, const std::string& name);

  Rendered render(const nlohmann::ordered_json& variables, const RenderLimits& limits = {}) const;
  Rendered render(const DictObj& variables, const RenderLimits& limits = {}) const;

  const std::string& name() const { return parsed_->name; }
  bool has_generation() const { return parsed_->has_generation; }

 private:
  std::shared_ptr<const ParsedTemplate> parsed_;
};

}  // namespace qtune::jinja
