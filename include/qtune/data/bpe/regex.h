#pragma once
// The patterns of a tokenizer.json (Split, Replace) on Oniguruma, compiled as HF tokenizers compiles them through
// the onig crate (Regex::new: UTF-8, ONIG_OPTION_NONE, the default syntax) and iterated as the crate's find_iter
// does (an empty match right after the previous match is skipped by one character). A string pattern is escaped
// the way HF escapes it (regex::escape) and compiled the same way.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qtune::data::bpe {

// One piece of a text cut by a pattern: [start, end) bytes, and whether the pattern matched it.
struct PatternSpan {
  size_t start, end;
  bool is_match;
};

class Regex {
 public:
  // `where` names the file and key in the error when `pattern` does not compile (Oniguruma's message included).
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // HF's Pattern::find_matches: spans covering the whole text in order, matches and the gaps between them;
  // the empty text gives one empty non-match.
  std::vector<PatternSpan> find_matches(std::string_view text) const;

  // Matches only, as the onig crate's find_iter yields them.
  void find_iter(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
  std::string pattern_;
  std::string where_;
};

// A literal string as a pattern, escaped as Rust's regex::escape does.
std::string regex_escape(std::string_view literal);

}  // namespace qtune::data::bpe
