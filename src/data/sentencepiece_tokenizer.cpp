#include "qtune/data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <filesystem>

#include "qtune/data/bpe/json_path.h"
#include "qtune/data/bpe/token_decoder.h"
#include "qtune/data/foreign_tokenizer.h"
#include "qtune/util/error.h"

namespace qtune::data {
namespace {

// SentencePiece::Type (also llama.cpp's token types).
constexpr int kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kByte = 6;

// What the processor's API does not expose, read from the serialized ModelProto (Debian ships no
// sentencepiece_model.pb.h): each piece's type, and two normalizer flags.
struct ProtoFields {
  std::vector<int> types;  // SentencePiece::Type per id (NORMAL 1 when the field is absent)
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
};

class ProtoReader {
 public:
  ProtoReader(const char* p, const char* end) : p_(p), end_(end) {}
  bool done() const { return p_ >= end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; p_ < end_ && shift < 64; shift += 7) {
      const auto b = static_cast<uint8_t>(*p_++);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) break;
    }
    return v;
  }
  // Calls f(field, wire, reader-of-a-length-delimited-value or nullptr, varint value) for each field.
  template <typename F>
  void fields(F&& f) {
    while (!done()) {
      const auto key = varint();
      const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
      if (wire == 0) {
        f(field, nullptr, varint());
      } else if (wire == 2) {
        const auto n = varint();
        const char* start = p_;
        p_ = n > static_cast<uint64_t>(end_ - p_) ? end_ : p_ + n;
        ProtoReader sub(start, p_);
        f(field, &sub, 0);
      } else if (wire == 5) {
        p_ += std::min<ptrdiff_t>(4, end_ - p_);
      } else if (wire == 1) {
        p_ += std::min<ptrdiff_t>(8, end_ - p_);
      } else {
        return;  // groups: not in sentencepiece_model.proto
      }
    }
  }

 private:
  const char* p_;
  const char* end_;
};

// ModelProto{pieces = 1 {type = 3}, normalizer_spec = 3 {add_dummy_prefix = 3, remove_extra_whitespaces = 4}}.
ProtoFields proto_fields(const std::string& proto) {
  ProtoFields out;
  ProtoReader r(proto.data(), proto.data() + proto.size());
  r.fields([&](int field, ProtoReader* sub, uint64_t) {
    if (field == 1 && sub) {
      int type = kNormal;
      sub->fields([&](int f, ProtoReader*, uint64_t v) {
        if (f == 3) type = static_cast<int>(v);
      });
      out.types.push_back(type);
    } else if (field == 3 && sub) {
      sub->fields([&](int f, ProtoReader*, uint64_t v) {
        if (f == 3) out.add_dummy_prefix = v != 0;
        if (f == 4) out.remove_extra_whitespaces = v != 0;
      });
    }
  });
  return out;
}

// The pieces cut out of a text before the model sees it, matched leftmost-longest.
class PieceMatcher {
 public:
  void add(std::string text, int64_t id) {
    if (text.empty()) return;
    auto& list = by_first_byte_[static_cast<unsigned char>(text[0])];
    list.emplace_back(std::move(text), id);
    std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
  // Calls text(start, end) for each stretch between matches and piece(id) for each match, in order.
  template <typename Text, typename Piece>
  void split(const std::string& s, Text&& text, Piece&& piece) const {
    size_t from = 0;
    for (size_t i = 0; i < s.size();) {
      const auto& list = by_first_byte_[static_cast<unsigned char>(s[i])];
      const std::pair<std::string, int64_t>* hit = nullptr;
      for (const auto& c : list)
        if (s.compare(i, c.first.size(), c.first) == 0) {
          hit = &c;
          break;
        }
      if (hit == nullptr) {
        ++i;
        continue;
      }
      if (i > from) text(from, i);
      piece(hit->second);
      i += hit->first.size();
      from = i;
    }
    if (s.size() > from) text(from, s.size());
  }

 private:
  std::array<std::vector<std::pair<std::string, int64_t>>, 256> by_first_byte_;
};

// transformers' LlamaTokenizer decoder: "▁" is a space, <0xXX> runs are their bytes (U+FFFD per byte when not
// UTF-8), then one leading space goes when encoding prepends one.
std::unique_ptr<bpe::TokenDecoder> llama_decoder(bool strip_prefix_space) {
  nlohmann::json steps = {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                          {{"type", "ByteFallback"}},
                          {{"type", "Fuse"}}};
  steps[0]["pattern"]["String"] = "\xE2\x96\x81";
  if (strip_prefix_space) steps.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  return bpe::parse_decoder({{"type", "Sequence"}, {"decoders", steps}}, bpe::JsonPath{"SentencePiece decoder", ""});
}

}  // namespace

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  ProtoFields fields;
  PieceMatcher specials;
  std::unique_ptr<bpe::TokenDecoder> decoder;

  // After the processor has loaded: the proto's types, the pieces matched in the text, the decoder.
  void init(const std::optional<std::vector<int64_t>>& matched_ids, const std::string& source) {
    fields = proto_fields(sp.serialized_model_proto());
    fields.types.resize(static_cast<size_t>(sp.GetPieceSize()), kNormal);
    if (matched_ids) {
      for (auto id : *matched_ids) {
        if (id < 0 || id >= sp.GetPieceSize()) fail("{}: special token id {} is outside the vocabulary", source, id);
        specials.add(sp.IdToPiece(static_cast<int>(id)), id);
      }
    } else {
      for (int id = 0; id < sp.GetPieceSize(); ++id) {
        const int t = fields.types[static_cast<size_t>(id)];
        if (t == kControl || t == kUserDefined || t == kUnknown) specials.add(sp.IdToPiece(id), id);
      }
    }
    decoder = llama_decoder(fields.add_dummy_prefix);
  }
};

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<Impl> impl, std::string source)
    : impl_(std::move(impl)), source_(std::move(source)) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::shared_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load(const std::string& model_path) {
  if (!std::filesystem::exists(model_path)) fail("{}: tokenizer.model not found", model_path);
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.Load(model_path);
  if (!status.ok()) {
    if (is_tiktoken_file(model_path)) fail_tiktoken(model_path);
    fail("{}: not a valid SentencePiece model: {}", model_path, status.ToString());
  }
  impl->init(std::nullopt, model_path);
  return std::shared_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl), model_path));
}

std::shared_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_serialized_proto(
    const std::string& proto, const std::string& source, const std::optional<std::vector<int64_t>>& matched_ids) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.LoadFromSerializedProto(proto);
  if (!status.ok()) fail("{}: not a valid SentencePiece model: {}", source, status.ToString());
  impl->init(matched_ids, source);
  return std::shared_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl), source));
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out;
  std::vector<int> ids;
  // Each stretch between special pieces is a text of its own, with the dummy prefix: llama.cpp's SPM tokenizer and
  // transformers' (legacy) Llama tokenizer both prepend "▁" after every special token.
  impl_->specials.split(
      text,
      [&](size_t start, size_t end) {
        const auto status = impl_->sp.Encode(text.substr(start, end - start), &ids);
        if (!status.ok()) fail("{}: cannot encode text: {}", source_, status.ToString());
        out.insert(out.end(), ids.begin(), ids.end());
      },
      [&](int64_t id) { out.push_back(id); });
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  const int64_t n = vocab_size();
  for (auto id : ids) {
    if (id < 0 || id >= n) continue;
    if (skip_special && is_special(id)) continue;
    pieces.push_back(impl_->sp.IdToPiece(static_cast<int>(id)));
  }
  impl_->decoder->decode_chain(pieces);
  std::string text;
  for (const auto& p : pieces) text += p;
  return text;
}

std::string SentencePieceTokenizer::piece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return impl_->sp.IdToPiece(static_cast<int>(id));
}

std::optional<int64_t> SentencePieceTokenizer::token_id(const std::string& piece) const {
  const int id = impl_->sp.PieceToId(piece);
  if (id == impl_->sp.unk_id() && piece != impl_->sp.IdToPiece(id)) return std::nullopt;
  return id;
}

int64_t SentencePieceTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }

// transformers' special tokens: <s>, </s>, <unk> and the other control pieces.
bool SentencePieceTokenizer::is_special(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  const int t = impl_->fields.types[static_cast<size_t>(id)];
  return t == kControl || t == kUnknown;
}

std::vector<SentencePieceTokenizer::Piece> SentencePieceTokenizer::pieces() const {
  const auto& sp = impl_->sp;
  std::vector<Piece> out(static_cast<size_t>(sp.GetPieceSize()));
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    auto& p = out[static_cast<size_t>(id)];
    p.text = sp.IdToPiece(id);
    p.score = sp.GetScore(id);
    const int t = impl_->fields.types[static_cast<size_t>(id)];
    p.type = t >= kNormal && t <= kByte ? t : kNormal;
  }
  return out;
}

bool SentencePieceTokenizer::adds_dummy_prefix() const { return impl_->fields.add_dummy_prefix; }

bool SentencePieceTokenizer::removes_extra_whitespaces() const { return impl_->fields.remove_extra_whitespaces; }

SpecialTokens SentencePieceTokenizer::special_tokens() const {
  SpecialTokens s;
  auto id = [](int v) { return v >= 0 ? std::optional<int64_t>(v) : std::nullopt; };
  s.bos = id(impl_->sp.bos_id());
  s.eos = id(impl_->sp.eos_id());
  s.unk = id(impl_->sp.unk_id());
  s.pad = id(impl_->sp.pad_id());
  s.add_bos = s.bos.has_value();  // transformers' LlamaTokenizer: add_bos_token defaults to true
  return s;
}

}  // namespace qtune::data
