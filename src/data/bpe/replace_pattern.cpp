#include "qtune/data/bpe/replace_pattern.h"

#include "qtune/util/error.h"

namespace qtune::data::bpe {

using nlohmann::json;

std::unique_ptr<Regex> parse_pattern(const json& obj, const JsonPath& at) {
  const JsonPath p = at.key("pattern");
  const json& pattern = json_require(obj, "pattern", at);
  if (pattern.is_object() && pattern.size() == 1) {
    if (pattern.contains("String") && pattern["String"].is_string())
      return std::make_unique<Regex>(regex_escape(pattern["String"].get<std::string>()), p.str());
    if (pattern.contains("Regex") && pattern["Regex"].is_string())
      return std::make_unique<Regex>(pattern["Regex"].get<std::string>(), p.str());
  }
  fail("{}: expected {{\"String\": ...}} or {{\"Regex\": ...}}, got {}", p.str(), pattern.dump());
}

ReplacePattern::ReplacePattern(const json& obj, const JsonPath& at)
    : pattern_(parse_pattern(obj, at)), content_(json_string(obj, "content", at)) {}

std::string ReplacePattern::apply(const std::string& text) const {
  std::string out;
  out.reserve(text.size());
  for (const auto& span : pattern_->find_matches(text)) {
    if (span.is_match)
      out += content_;
    else
      out.append(text, span.start, span.end - span.start);
  }
  return out;
}

}  // namespace qtune::data::bpe
