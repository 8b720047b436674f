#include "qtune/data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>

#include "qtune/data/foreign_tokenizer.h"
#include "qtune/util/error.h"

namespace qtune::data {
namespace {

// What the processor's API does not expose, read from the serialized ModelProto (Debian ships no
// sentencepiece_model.pb.h): which pieces are USER_DEFINED, and two normalizer flags.
struct ProtoFields {
  std::vector<bool> user_defined;
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
      bool user = false;
      sub->fields([&](int f, ProtoReader*, uint64_t v) { user = user || (f == 3 && v == 4); });
      out.user_defined.push_back(user);
    } else if (field == 3 && sub) {
      sub->fields([&](int f, ProtoReader*, uint64_t v) {
        if (f == 3) out.add_dummy_prefix = v != 0;
        if (f == 4) out.remove_extra_whitespaces = v != 0;
      });
    }
  });
  return out;
}

}  // namespace

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
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
  return std::shared_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl), model_path));
}

std::shared_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_serialized_proto(const std::string& proto,
                                                                                     const std::string& source) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.LoadFromSerializedProto(proto);
  if (!status.ok()) fail("{}: not a valid SentencePiece model: {}", source, status.ToString());
  return std::shared_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl), source));
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) fail("{}: cannot encode text: {}", source_, status.ToString());
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  const int64_t n = vocab_size();
  for (auto id : ids) {
    if (id < 0 || id >= n) continue;
    if (skip_special && is_special(id)) continue;
    pieces.push_back(static_cast<int>(id));
  }
  std::string text;
  const auto status = impl_->sp.Decode(pieces, &text);
  if (!status.ok()) fail("{}: cannot decode ids: {}", source_, status.ToString());
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

bool SentencePieceTokenizer::is_special(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  return impl_->sp.IsControl(static_cast<int>(id));
}

std::vector<SentencePieceTokenizer::Piece> SentencePieceTokenizer::pieces() const {
  const auto& sp = impl_->sp;
  const auto user_defined = proto_fields(sp.serialized_model_proto()).user_defined;
  std::vector<Piece> out(static_cast<size_t>(sp.GetPieceSize()));
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    auto& p = out[static_cast<size_t>(id)];
    p.text = sp.IdToPiece(id);
    p.score = sp.GetScore(id);
    p.type = sp.IsUnknown(id) ? 2 : sp.IsControl(id) ? 3 : sp.IsUnused(id) ? 5 : sp.IsByte(id) ? 6 : 1;
    if (p.type == 1 && static_cast<size_t>(id) < user_defined.size() && user_defined[static_cast<size_t>(id)]) p.type = 4;
  }
  return out;
}

bool SentencePieceTokenizer::adds_dummy_prefix() const {
  return proto_fields(impl_->sp.serialized_model_proto()).add_dummy_prefix;
}

bool SentencePieceTokenizer::removes_extra_whitespaces() const {
  return proto_fields(impl_->sp.serialized_model_proto()).remove_extra_whitespaces;
}

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
