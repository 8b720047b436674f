#include "qtune/data/bpe/normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/bytestream.h>

#include <vector>

#include "qtune/data/bpe/byte_level.h"
#include "qtune/data/bpe/regex.h"
#include "qtune/data/bpe/replace_pattern.h"
#include "qtune/util/error.h"

namespace qtune::data::bpe {

using nlohmann::json;

namespace {

constexpr std::string_view kSupported = "NFC, Prepend, Replace, ByteLevel, Sequence";

// ICU's NFC on UTF-8. HF's tables (unicode-normalization) may be a Unicode version behind ICU's; the two differ
// only on characters added in between.
class Nfc : public Normalizer {
 public:
  explicit Nfc(const JsonPath& at) {
    UErrorCode err = U_ZERO_ERROR;
    nfc_ = icu::Normalizer2::getNFCInstance(err);
    if (U_FAILURE(err)) fail("{}: ICU's NFC normalizer is unavailable: {}", at.str(), u_errorName(err));
  }
  void normalize(std::string& text) const override {
    UErrorCode err = U_ZERO_ERROR;
    if (nfc_->isNormalizedUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), err) && U_SUCCESS(err))
      return;
    err = U_ZERO_ERROR;
    std::string out;
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
    nfc_->normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), sink, nullptr, err);
    if (U_FAILURE(err)) fail("NFC normalization failed: {}", u_errorName(err));
    text = std::move(out);
  }

 private:
  const icu::Normalizer2* nfc_ = nullptr;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class Replace : public Normalizer {
 public:
  Replace(const json& j, const JsonPath& at) : replace_(j, at) {}
  void normalize(std::string& text) const override { text = replace_.apply(text); }

 private:
  ReplacePattern replace_;
};

// Every byte to its byte-level character (HF's ByteLevel normalizer, for BPEs whose added tokens are byte-level).
class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size() * 2);
    byte_level_encode(text, out);
    text = std::move(out);
  }
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& text) const override {
    for (const auto& p : parts_) p->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const JsonPath& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "NFC") return std::make_unique<Nfc>(at);
  if (type == "Prepend") return std::make_unique<Prepend>(json_string(j, "prepend", at));
  if (type == "Replace") return std::make_unique<Replace>(j, at);
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Sequence") return std::make_unique<Sequence>(parse_sequence<Normalizer>(j, "normalizers", at, "a normalizer", parse_normalizer));
  unsupported_type(at, type, kSupported);
}

}  // namespace qtune::data::bpe
