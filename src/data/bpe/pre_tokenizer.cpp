#include "qtune/data/bpe/pre_tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>

#include "qtune/data/bpe/byte_level.h"
#include "qtune/data/bpe/regex.h"
#include "qtune/data/bpe/replace_pattern.h"
#include "qtune/data/bpe/utf8.h"
#include "qtune/util/error.h"

namespace qtune::data::bpe {

using nlohmann::json;

namespace {

constexpr std::string_view kSupported = "Split, ByteLevel, Digits, Metaspace, Sequence";

// GPT-2's pre-tokenizer regex, which HF's ByteLevel uses when use_regex is true.
constexpr const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const json& j, const JsonPath& at) {
  const std::string b = json_string(j, "behavior", at);
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  fail("{}: 'behavior' must be Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous, got '{}'",
       at.str(), b);
}

struct Cut {
  size_t start, end;
  bool remove;
};

// HF's NormalizedString::split: how the delimiter spans join their neighbours under each behaviour.
std::vector<Cut> apply_behavior(const std::vector<PatternSpan>& spans, Behavior behavior) {
  std::vector<Cut> cuts;
  cuts.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case Behavior::Isolated:
      for (const auto& s : spans) cuts.push_back({s.start, s.end, false});
      break;
    case Behavior::Removed:
      for (const auto& s : spans) cuts.push_back({s.start, s.end, s.is_match});
      break;
    case Behavior::Contiguous:
      for (const auto& s : spans) {
        if (s.is_match == previous_match && !cuts.empty())
          cuts.back().end = s.end;
        else
          cuts.push_back({s.start, s.end, false});
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const auto& s : spans) {
        if (s.is_match && !previous_match && !cuts.empty())
          cuts.back().end = s.end;
        else
          cuts.push_back({s.start, s.end, false});
        previous_match = s.is_match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !cuts.empty())
          cuts.back().start = it->start;
        else
          cuts.push_back({it->start, it->end, false});
        previous_match = it->is_match;
      }
      std::reverse(cuts.begin(), cuts.end());
      break;
  }
  return cuts;
}

void cut_piece(Piece& piece, const std::vector<PatternSpan>& spans, Behavior behavior, std::vector<Piece>& out) {
  const auto cuts = apply_behavior(spans, behavior);
  if (cuts.size() == 1 && !cuts[0].remove && cuts[0].start == 0 && cuts[0].end == piece.text.size()) {
    if (!piece.text.empty()) out.push_back(std::move(piece));
    return;
  }
  for (const auto& c : cuts)
    if (!c.remove && c.end > c.start) out.push_back({piece.text.substr(c.start, c.end - c.start), piece.at_start && c.start == 0});
}

// HF's Pattern for a char predicate: each matching character is one match.
template <typename Pred>
std::vector<PatternSpan> char_matches(std::string_view text, Pred pred) {
  if (text.empty()) return {{0, 0, false}};
  std::vector<PatternSpan> spans;
  size_t last = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t b = i;
    const char32_t c = utf8_next(text, i);
    if (pred(c)) {
      if (last < b) spans.push_back({last, b, false});
      spans.push_back({b, i, true});
      last = i;
    }
  }
  if (last < text.size()) spans.push_back({last, text.size(), false});
  return spans;
}

template <typename F>
void split_each(std::vector<Piece>& pieces, F&& split_one) {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  for (auto& p : pieces) split_one(p, out);
  pieces = std::move(out);
}

class Split : public PreTokenizer {
 public:
  Split(const json& j, const JsonPath& at)
      : regex_(parse_pattern(j, at)), behavior_(parse_behavior(j, at)), invert_(json_bool(j, "invert", at)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      auto spans = regex_->find_matches(p.text);
      if (invert_)
        for (auto& s : spans) s.is_match = !s.is_match;
      cut_piece(p, spans, behavior_, out);
    });
  }

 private:
  std::unique_ptr<Regex> regex_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(const json& j, const JsonPath& at)
      : add_prefix_space_(json_bool(j, "add_prefix_space", at)), use_regex_(json_bool(j, "use_regex", at, true)) {
    if (use_regex_) regex_ = std::make_unique<Regex>(kGpt2Regex, at.str());
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      if (add_prefix_space_ && !p.text.empty() && p.text[0] != ' ') p.text.insert(0, " ");
      if (use_regex_)
        cut_piece(p, regex_->find_matches(p.text), Behavior::Isolated, out);
      else if (!p.text.empty())
        out.push_back(std::move(p));
    });
    std::string mapped;
    for (auto& p : pieces) {
      mapped.clear();
      byte_level_encode(p.text, mapped);
      p.text.swap(mapped);
    }
  }

 private:
  bool add_prefix_space_, use_regex_;
  std::unique_ptr<Regex> regex_;
};

// Rust's char::is_numeric: general categories Nd, Nl and No.
bool is_numeric(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  const auto t = u_charType(static_cast<UChar32>(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

class Digits : public PreTokenizer {
 public:
  Digits(const json& j, const JsonPath& at) : individual_(json_bool(j, "individual_digits", at, false)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      cut_piece(p, char_matches(p.text, is_numeric), individual_ ? Behavior::Isolated : Behavior::Contiguous, out);
    });
  }

 private:
  bool individual_;
};

class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };

  Metaspace(const json& j, const JsonPath& at) {
    replacement_ = json_string(j, "replacement", at);
    size_t i = 0;
    if (replacement_.empty() || utf8_first_invalid(replacement_) != std::string::npos ||
        (utf8_next(replacement_, i), i != replacement_.size()))
      fail("{}: 'replacement' must be exactly one character, got '{}'", at.str(), replacement_);
    i = 0;
    replacement_char_ = utf8_next(replacement_, i);
    const std::string scheme = json_string(j, "prepend_scheme", at, "always");
    if (scheme == "always")
      prepend_ = Prepend::Always;
    else if (scheme == "first")
      prepend_ = Prepend::First;
    else if (scheme == "never")
      prepend_ = Prepend::Never;
    else
      fail("{}: 'prepend_scheme' must be always, first or never, got '{}'", at.str(), scheme);
    // Files from before prepend_scheme existed say add_prefix_space; HF rejects a contradiction.
    if (j.contains("add_prefix_space") && !json_bool(j, "add_prefix_space", at, true)) {
      if (prepend_ != Prepend::Never)
        fail("{}: add_prefix_space false does not match prepend_scheme '{}'", at.str(), scheme);
    }
    split_ = json_bool(j, "split", at, true);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, std::vector<Piece>& out) {
      std::string text;
      text.reserve(p.text.size() + 8);
      for (const char c : p.text) {
        if (c == ' ')
          text += replacement_;
        else
          text.push_back(c);
      }
      const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!text.empty() && !starts && (prepend_ == Prepend::Always || (prepend_ == Prepend::First && p.at_start)))
        text.insert(0, replacement_);
      p.text = std::move(text);
      if (!split_) {
        if (!p.text.empty()) out.push_back(std::move(p));
        return;
      }
      const char32_t r = replacement_char_;
      cut_piece(p, char_matches(p.text, [r](char32_t c) { return c == r; }), Behavior::MergedWithNext, out);
    });
  }

 private:
  std::string replacement_;
  char32_t replacement_char_ = 0;
  Prepend prepend_ = Prepend::Always;
  bool split_ = true;
};

class Sequence : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const JsonPath& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "Split") return std::make_unique<Split>(j, at);
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(j, at);
  if (type == "Digits") return std::make_unique<Digits>(j, at);
  if (type == "Metaspace") return std::make_unique<Metaspace>(j, at);
  if (type == "Sequence") return std::make_unique<Sequence>(parse_sequence<PreTokenizer>(j, "pretokenizers", at, "a pre-tokenizer", parse_pre_tokenizer));
  unsupported_type(at, type, kSupported);
}

}  // namespace qtune::data::bpe
