#pragma once
// Tokens to nodes, after jinja2's parser.py: the statements and expressions of templates, with transformers'
// extensions (`{% generation %}`, `{% break %}` / `{% continue %}`). A tag jinja2 knows that qtune does not implement
// (extends, block, include, import, autoescape, recursive loops ...) is an error naming its line and column.
#include <memory>
#include <string>

#include "qtune/jinja/ast.h"

namespace qtune::jinja {

struct ParsedTemplate {
  std::string name;    // the source, for errors: "DIR/tokenizer_config.json (chat_template)"
  std::string source;  // normalized (offsets refer to it)
  Body body;
  bool has_generation = false;  // a {% generation %} block somewhere
};

std::shared_ptr<const ParsedTemplate> parse_template(const std::string& text, const std::string& name);

}  // namespace qtune::jinja
