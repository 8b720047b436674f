#include "qtune/data/bpe/regex.h"

#include <oniguruma.h>

#include <mutex>

#include "qtune/data/bpe/utf8.h"
#include "qtune/util/error.h"

namespace qtune::data::bpe {

struct Regex::Compiled {
  OnigRegex regex = nullptr;
};

namespace {

void init_oniguruma() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

std::string onig_message(int code, OnigErrorInfo* info) {
  OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
  if (info)
    onig_error_code_to_str(buf, code, info);
  else
    onig_error_code_to_str(buf, code);
  return reinterpret_cast<const char*>(buf);
}

const auto* bytes(std::string_view s) { return reinterpret_cast<const OnigUChar*>(s.data()); }

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where)
    : compiled_(std::make_unique<Compiled>()), pattern_(pattern), where_(where) {
  init_oniguruma();
  OnigErrorInfo info;
  const int r = onig_new(&compiled_->regex, bytes(pattern), bytes(pattern) + pattern.size(), ONIG_OPTION_NONE,
                         ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &info);
  if (r != ONIG_NORMAL) {
    compiled_->regex = nullptr;
    fail("{}: the regex '{}' does not compile (Oniguruma: {})", where, pattern, onig_message(r, &info));
  }
}

Regex::~Regex() {
  if (compiled_ && compiled_->regex) onig_free(compiled_->regex);
}

void Regex::find_iter(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  OnigRegion* region = onig_region_new();
  const OnigUChar* start = bytes(text);
  const OnigUChar* end = start + text.size();
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    onig_region_clear(region);
    const int r = onig_search(compiled_->regex, start, end, start + last_end, end, region, ONIG_OPTION_NONE);
    if (r == ONIG_MISMATCH) break;
    if (r < 0) {
      onig_region_free(region, 1);
      fail("{}: searching with the regex '{}' failed (Oniguruma: {})", where_, pattern_, onig_message(r, nullptr));
    }
    const auto s = static_cast<size_t>(region->beg[0]), e = static_cast<size_t>(region->end[0]);
    // No empty match right where the previous one ended: step one character instead (no endless loop).
    if (s == e && have_last && last_match_end == e) {
      last_end += last_end < text.size() ? utf8_char_len(static_cast<unsigned char>(text[last_end])) : 1;
      continue;
    }
    last_end = e;
    last_match_end = e;
    have_last = true;
    out.emplace_back(s, e);
  }
  onig_region_free(region, 1);
}

std::vector<PatternSpan> Regex::find_matches(std::string_view text) const {
  if (text.empty()) return {{0, 0, false}};
  std::vector<std::pair<size_t, size_t>> matches;
  find_iter(text, matches);
  std::vector<PatternSpan> spans;
  spans.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) spans.push_back({prev, s, false});
    spans.push_back({s, e, true});
    prev = e;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), false});
  return spans;
}

std::string regex_escape(std::string_view literal) {
  static constexpr std::string_view kMeta = "\\.+*?()|[]{}^$#&-~";
  std::string out;
  out.reserve(literal.size());
  for (const char c : literal) {
    if (kMeta.find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace qtune::data::bpe
