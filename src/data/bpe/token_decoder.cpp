#include "qtune/data/bpe/token_decoder.h"

#include "qtune/data/bpe/byte_level.h"
#include "qtune/data/bpe/replace_pattern.h"
#include "qtune/data/bpe/utf8.h"
#include "qtune/util/error.h"

namespace qtune::data::bpe {

using nlohmann::json;

namespace {

constexpr std::string_view kSupported = "ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence";

// All tokens' bytes (a token outside the alphabet gives its own bytes), then one lossy UTF-8 conversion: a
// character split across tokens comes out whole, a stray byte as U+FFFD.
class ByteLevel : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens)
      if (!byte_level_decode(t, bytes)) bytes += t;
    tokens.assign(1, utf8_lossy(bytes));
  }
};

// Runs of <0xXX> tokens become their bytes when those are valid UTF-8, else one U+FFFD per byte.
class ByteFallback : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_first_invalid(pending) == std::string::npos)
        out.push_back(pending);
      else
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back(kReplacementChar);
      pending.clear();
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') byte = parse_hex_byte(t.substr(3, 2));
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  // Rust's u8::from_str_radix(s, 16) on two bytes: two hex digits, or '+' and one.
  static int parse_hex_byte(const std::string& s) {
    auto hex = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    if (s[0] == '+') return hex(s[1]);
    const int hi = hex(s[0]), lo = hex(s[1]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class Fuse : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing occurrences of one character from each token.
class Strip : public TokenDecoder {
 public:
  Strip(const json& j, const JsonPath& at) {
    const std::string content = json_string(j, "content", at);
    size_t i = 0;
    if (content.empty() || utf8_first_invalid(content) != std::string::npos || (utf8_next(content, i), i != content.size()))
      fail("{}: 'content' must be exactly one character, got '{}'", at.str(), content);
    i = 0;
    content_ = utf8_next(content, i);
    start_ = count(j, "start", at);
    stop_ = count(j, "stop", at);
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, code point)
      for (size_t i = 0; i < t.size();) {
        const size_t at = i;
        chars.emplace_back(at, utf8_next(t, i));
      }
      size_t start_cut = 0;
      for (size_t i = 0; i < std::min(start_, chars.size()) && chars[i].second == content_; ++i) start_cut = i + 1;
      size_t stop_cut = chars.size();
      for (size_t i = 0; i < std::min(stop_, chars.size()) && chars[chars.size() - 1 - i].second == content_; ++i)
        stop_cut = chars.size() - 1 - i;
      if (stop_cut <= start_cut) {
        t.clear();
        continue;
      }
      const size_t b0 = start_cut < chars.size() ? chars[start_cut].first : t.size();
      const size_t b1 = stop_cut < chars.size() ? chars[stop_cut].first : t.size();
      t = t.substr(b0, b1 - b0);
    }
  }

 private:
  static size_t count(const json& j, const char* key, const JsonPath& at) {
    const json& v = json_require(j, key, at);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
      fail("{}: '{}' must be a non-negative integer, got {}", at.str(), key, v.dump());
    return v.get<size_t>();
  }
  char32_t content_ = ' ';
  size_t start_ = 0, stop_ = 0;
};

class Replace : public TokenDecoder {
 public:
  Replace(const json& j, const JsonPath& at) : replace_(j, at) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = replace_.apply(t);
  }

 private:
  ReplacePattern replace_;
};

// The replacement character becomes a space, except in the first token when a space was prepended on encoding.
class Metaspace : public TokenDecoder {
 public:
  Metaspace(const json& j, const JsonPath& at) {
    replacement_ = json_string(j, "replacement", at);
    size_t i = 0;
    if (replacement_.empty() || utf8_first_invalid(replacement_) != std::string::npos ||
        (utf8_next(replacement_, i), i != replacement_.size()))
      fail("{}: 'replacement' must be exactly one character, got '{}'", at.str(), replacement_);
    const std::string scheme = json_string(j, "prepend_scheme", at, "always");
    if (scheme != "always" && scheme != "first" && scheme != "never")
      fail("{}: 'prepend_scheme' must be always, first or never, got '{}'", at.str(), scheme);
    if (j.contains("add_prefix_space") && !json_bool(j, "add_prefix_space", at, true) && scheme != "never")
      fail("{}: add_prefix_space false does not match prepend_scheme '{}'", at.str(), scheme);
    drop_first_ = scheme != "never" && json_bool(j, "add_prefix_space", at, true);
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string out;
      const std::string& t = tokens[k];
      for (size_t i = 0; i < t.size();) {
        if (t.compare(i, replacement_.size(), replacement_) == 0) {
          if (!(k == 0 && drop_first_)) out.push_back(' ');
          i += replacement_.size();
        } else {
          out.push_back(t[i++]);
        }
      }
      tokens[k] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool drop_first_ = true;
};

class Sequence : public TokenDecoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<TokenDecoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<TokenDecoder>> parts_;
};

}  // namespace

std::unique_ptr<TokenDecoder> parse_decoder(const json& j, const JsonPath& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") return std::make_unique<Strip>(j, at);
  if (type == "Replace") return std::make_unique<Replace>(j, at);
  if (type == "Metaspace") return std::make_unique<Metaspace>(j, at);
  if (type == "Sequence") return std::make_unique<Sequence>(parse_sequence<TokenDecoder>(j, "decoders", at, "a decoder", parse_decoder));
  unsupported_type(at, type, kSupported);
}

}  // namespace qtune::data::bpe
