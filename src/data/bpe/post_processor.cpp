#include "qtune/data/bpe/post_processor.h"

#include "qtune/util/error.h"

namespace qtune::data::bpe {

using nlohmann::json;

namespace {

constexpr std::string_view kSupported = "TemplateProcessing, ByteLevel, Sequence";

void parse_template(const json& j, const JsonPath& at, SpecialTokens& out, bool& seen_template) {
  if (seen_template) fail("{}: a second TemplateProcessing is not supported (they would add their tokens twice)", at.str());
  seen_template = true;
  const JsonPath single_at = at.key("single");
  const json& single = json_require(j, "single", at);
  if (!single.is_array()) fail("{}: expected a list of pieces", single_at.str());
  const json& specials = json_require(j, "special_tokens", at);
  std::vector<int64_t> before, after;
  bool seen_a = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const JsonPath piece_at = single_at.index(i);
    const json& piece = single[i];
    if (piece.is_object() && piece.contains("Sequence")) {
      const std::string id = json_string(piece["Sequence"], "id", piece_at.key("Sequence"));
      if (id != "A" || seen_a) fail("{}: the single template must hold $A once, got sequence '{}'", piece_at.str(), id);
      seen_a = true;
      continue;
    }
    if (!piece.is_object() || !piece.contains("SpecialToken"))
      fail("{}: expected {{\"SpecialToken\": ...}} or {{\"Sequence\": ...}}, got {}", piece_at.str(), piece.dump());
    const std::string name = json_string(piece["SpecialToken"], "id", piece_at.key("SpecialToken"));
    const JsonPath special_at = at.key("special_tokens").key(name);
    const json& special = json_require(specials, name.c_str(), at.key("special_tokens"));
    const json& ids = json_require(special, "ids", special_at);
    if (!ids.is_array() || ids.size() != 1 || !ids[0].is_number_integer())
      fail("{}: 'ids' must hold exactly one id (qtune adds one token before or after the text), got {}",
           special_at.str(), ids.dump());
    (seen_a ? after : before).push_back(ids[0].get<int64_t>());
  }
  if (!seen_a) fail("{}: the single template has no $A", single_at.str());
  if (before.size() > 1 || after.size() > 1)
    fail("{}: {} special tokens before $A and {} after; qtune supports at most one on each side", single_at.str(),
         before.size(), after.size());
  if (!before.empty()) out.bos = before[0], out.add_bos = true;
  if (!after.empty()) out.eos = after[0], out.add_eos = true;
}

void parse(const json& j, const JsonPath& at, SpecialTokens& out, bool& seen_template) {
  if (j.is_null()) return;
  const std::string type = json_type(j, at);
  if (type == "ByteLevel") return;
  if (type == "TemplateProcessing") return parse_template(j, at, out, seen_template);
  if (type == "Sequence") {
    const json& list = json_require(j, "processors", at);
    if (!list.is_array()) fail("{}: 'processors' must be a list", at.str());
    for (size_t i = 0; i < list.size(); ++i) parse(list[i], at.key("processors").index(i), out, seen_template);
    return;
  }
  unsupported_type(at, type, kSupported);
}

}  // namespace

void parse_post_processor(const json& j, const JsonPath& at, SpecialTokens& out) {
  bool seen_template = false;
  parse(j, at, out, seen_template);
}

}  // namespace qtune::data::bpe
