#include "qtune/data/bpe/added_vocabulary.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unicode/uchar.h>

#include "qtune/data/bpe/bpe_model.h"
#include "qtune/data/bpe/normalizer.h"
#include "qtune/data/bpe/utf8.h"
#include "qtune/util/error.h"

namespace qtune::data::bpe {

using nlohmann::json;

namespace {

// Rust regex's Unicode \w, which HF's single_word test uses: Alphabetic, marks, Nd, Pc and Join_Control.
bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  const auto u = static_cast<UChar32>(c);
  const auto t = u_charType(u);
  return u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || t == U_NON_SPACING_MARK || t == U_COMBINING_SPACING_MARK ||
         t == U_ENCLOSING_MARK || t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION ||
         u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL);
}

// The code point that ends text[0, end).
char32_t char_before(std::string_view text, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  return utf8_next(text, i);
}

// Where the whitespace that ends text[0, end) starts (HF's `\s*$`).
size_t trailing_space_start(std::string_view text, size_t end) {
  while (end > 0) {
    size_t i = end - 1;
    while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
    size_t j = i;
    if (!is_unicode_whitespace(utf8_next(text, j))) break;
    end = i;
  }
  return end;
}

// Where the whitespace that starts text[begin, ...) ends (HF's `^\s*`).
size_t leading_space_end(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    size_t j = begin;
    if (!is_unicode_whitespace(utf8_next(text, j))) break;
    begin = j;
  }
  return begin;
}

}  // namespace

void AddedVocabulary::Trie::insert(std::string_view s, int32_t token) {
  int32_t node = 0;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    auto it = nodes[node].next.find(c);
    if (it == nodes[node].next.end()) {
      nodes.emplace_back();
      it = nodes[node].next.emplace(c, static_cast<int32_t>(nodes.size() - 1)).first;
    }
    node = it->second;
  }
  nodes[node].token = token;
  first_byte[static_cast<unsigned char>(s[0])] = true;
}

std::pair<size_t, int32_t> AddedVocabulary::Trie::longest(std::string_view text, size_t pos) const {
  std::pair<size_t, int32_t> best{pos, -1};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto it = nodes[node].next.find(static_cast<unsigned char>(text[i]));
    if (it == nodes[node].next.end()) break;
    node = it->second;
    if (nodes[node].token >= 0) best = {i + 1, nodes[node].token};
  }
  return best;
}

AddedVocabulary::AddedVocabulary(const json& added_tokens, const BpeModel& model, const Normalizer* normalizer,
                                 const JsonPath& at) {
  if (added_tokens.is_null()) return;
  if (!added_tokens.is_array()) fail("{}: expected a list, got {}", at.str(), added_tokens.type_name());
  // HF's AddedVocabulary::add_tokens, called once with the whole list.
  int64_t next_id = model.size();
  std::unordered_map<int64_t, AddedToken> by_id;
  std::vector<int64_t> order;  // ids in first-seen order
  // Tokens whose declared id HF reassigns: one warning for all (a converted Tekken vocabulary has a thousand).
  size_t reassigned = 0;
  std::string first_reassigned;
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const JsonPath t_at = at.index(i);
    const json& t = added_tokens[i];
    AddedToken token;
    token.content = json_string(t, "content", t_at);
    token.special = json_bool(t, "special", t_at, false);
    token.single_word = json_bool(t, "single_word", t_at, false);
    token.lstrip = json_bool(t, "lstrip", t_at, false);
    token.rstrip = json_bool(t, "rstrip", t_at, false);
    token.normalized = json_bool(t, "normalized", t_at, !token.special);
    if (token.content.empty()) continue;
    if (utf8_first_invalid(token.content) != std::string::npos) fail("{}: 'content' is not valid UTF-8", t_at.str());
    int64_t id;
    if (const auto it = by_content_.find(token.content); it != by_content_.end())
      id = it->second;
    else if (const auto mid = model.token_id(token.content))
      id = *mid;
    else
      id = next_id++;
    if (t.contains("id") && t["id"].is_number_integer() && t["id"].get<int64_t>() != id && reassigned++ == 0)
      first_reassigned = fmt::format("{}: token '{}' was expected to have id {} but was given id {}", t_at.str(),
                                     token.content, t["id"].get<int64_t>(), id);
    token.id = id;
    token.normalized_content = token.content;
    if (token.normalized && normalizer) normalizer->normalize(token.normalized_content);
    by_content_[token.content] = id;
    if (token.special) special_.insert(token.content);
    if (!by_id.count(id)) order.push_back(id);
    by_id[id] = std::move(token);
  }
  if (reassigned == 1)
    spdlog::warn("{} (as HF tokenizers assigns it)", first_reassigned);
  else if (reassigned > 1)
    spdlog::warn("{}; {} added tokens in all were given other ids than declared (as HF tokenizers assigns them)",
                 first_reassigned, reassigned);
  tokens_.reserve(order.size());
  for (const int64_t id : order) {
    by_id_[id] = tokens_.size();
    tokens_.push_back(std::move(by_id[id]));
  }
  for (size_t k = 0; k < tokens_.size(); ++k) {
    const auto& t = tokens_[k];
    if (t.normalized) {
      if (!t.normalized_content.empty()) normalized_.insert(t.normalized_content, static_cast<int32_t>(k));
    } else {
      raw_.insert(t.content, static_cast<int32_t>(k));
    }
  }
}

std::vector<Segment> AddedVocabulary::split(std::string_view text, bool normalized) const {
  const Trie& trie = normalized ? normalized_ : raw_;
  if (text.empty()) return {{0, 0, std::nullopt}};
  std::vector<Segment> out;
  size_t start_offset = 0;
  for (size_t pos = 0; pos < text.size();) {
    if (!trie.first_byte[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [match_end, k] = trie.longest(text, pos);
    if (k < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = match_end;
    pos = match_end;  // the search goes on after this match, kept or not
    const AddedToken& token = tokens_[k];
    if (token.single_word) {
      const bool space_before = start == 0 || !is_word_char(char_before(text, start));
      size_t j = stop;
      const bool space_after = stop == text.size() || !is_word_char(utf8_next(text, j));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) start = std::max(trailing_space_start(text, start), start_offset);
    if (token.rstrip) stop = leading_space_end(text, stop);
    if (start_offset < start) out.push_back({start_offset, start, std::nullopt});
    out.push_back({start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset != text.size()) out.push_back({start_offset, text.size(), std::nullopt});
  return out;
}

const AddedToken* AddedVocabulary::by_id(int64_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int64_t> AddedVocabulary::id_of(const std::string& content) const {
  const auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

bool AddedVocabulary::is_special_content(const std::string& content) const { return special_.count(content) > 0; }

}  // namespace qtune::data::bpe
