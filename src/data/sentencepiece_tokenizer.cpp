#include "qtune/data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>

#include "qtune/util/error.h"

namespace qtune::data {

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
  if (!status.ok()) fail("{}: not a valid SentencePiece model: {}", model_path, status.ToString());
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
