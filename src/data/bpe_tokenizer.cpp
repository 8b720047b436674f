#include "qtune/data/bpe_tokenizer.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "qtune/data/bpe/added_vocabulary.h"
#include "qtune/data/bpe/bpe_model.h"
#include "qtune/data/bpe/json_path.h"
#include "qtune/data/bpe/normalizer.h"
#include "qtune/data/bpe/post_processor.h"
#include "qtune/data/bpe/pre_tokenizer.h"
#include "qtune/data/bpe/token_decoder.h"
#include "qtune/data/bpe/utf8.h"
#include "qtune/data/foreign_tokenizer.h"
#include "qtune/io/json_file.h"
#include "qtune/util/error.h"

namespace qtune::data {

using nlohmann::json;

struct BpeTokenizer::Impl {
  std::string source;
  std::unique_ptr<bpe::Normalizer> normalizer;
  std::unique_ptr<bpe::PreTokenizer> pre_tokenizer;
  std::unique_ptr<bpe::BpeModel> model;
  std::unique_ptr<bpe::AddedVocabulary> added;
  std::unique_ptr<bpe::TokenDecoder> decoder;
  SpecialTokens specials;
  int64_t vocab_size = 0;

  // One stretch of text between added tokens: normalized, cut at the normalized added tokens, pre-tokenized and
  // run through the model, as HF's extract_and_normalize, do_pre_tokenize and do_tokenize do.
  void encode_stretch(std::string_view text, bool at_start, std::vector<int64_t>& ids) const {
    std::string normalized(text);
    if (normalizer) normalizer->normalize(normalized);
    if (normalized.empty()) return;
    std::vector<bpe::Piece> pieces;
    for (const auto& seg : added->split(normalized, /*normalized=*/true)) {
      if (seg.token) {
        run_pieces(pieces, ids);
        ids.push_back(*seg.token);
        continue;
      }
      if (seg.end > seg.start)
        pieces.push_back({normalized.substr(seg.start, seg.end - seg.start), at_start && seg.start == 0});
    }
    run_pieces(pieces, ids);
  }

  void run_pieces(std::vector<bpe::Piece>& pieces, std::vector<int64_t>& ids) const {
    if (pieces.empty()) return;
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
    for (const auto& p : pieces) model->tokenize(p.text, ids);
    pieces.clear();
  }
};

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read the tokenizer.json: {}", path, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::shared_ptr<BpeTokenizer> BpeTokenizer::load(const std::string& tokenizer_json_path) {
  // The component parsers recurse into Sequences: the depth bound keeps a deep file an error, not a stack overflow.
  return from_json(io::parse_json_text(read_file(tokenizer_json_path), tokenizer_json_path), tokenizer_json_path);
}

std::shared_ptr<BpeTokenizer> BpeTokenizer::from_json(const json& j, const std::string& source) {
  const bpe::JsonPath top{source, ""};
  if (!j.is_object()) fail("{}: expected a JSON object at the top level, got {}", top.str(), j.type_name());
  if (is_tekken_json(j)) fail_tekken(source);
  if (const auto v = bpe::json_string(j, "version", top, "1.0"); v != "1.0")
    fail("{}: unknown tokenizer version '{}' (expected 1.0)", top.str(), v);
  for (const char* key : {"truncation", "padding"})
    if (j.contains(key) && !j[key].is_null())
      spdlog::warn("{}: '{}' is ignored: qtune truncates and pads batches itself", top.str(), key);

  auto impl = std::make_unique<Impl>();
  impl->source = source;
  impl->model = std::make_unique<bpe::BpeModel>(bpe::json_require(j, "model", top), top.key("model"));
  const json null;
  auto field = [&](const char* key) -> const json& { return j.contains(key) ? j[key] : null; };
  impl->normalizer = bpe::parse_normalizer(field("normalizer"), top.key("normalizer"));
  impl->pre_tokenizer = bpe::parse_pre_tokenizer(field("pre_tokenizer"), top.key("pre_tokenizer"));
  impl->decoder = bpe::parse_decoder(field("decoder"), top.key("decoder"));
  bpe::parse_post_processor(field("post_processor"), top.key("post_processor"), impl->specials);
  impl->added = std::make_unique<bpe::AddedVocabulary>(field("added_tokens"), *impl->model, impl->normalizer.get(),
                                                       top.key("added_tokens"));

  // HF's get_vocab_size(with_added_tokens=True): the model's tokens plus the added ones it does not hold.
  impl->vocab_size = impl->model->size();
  for (const auto& [content, id] : impl->added->contents())
    if (!impl->model->token_id(content)) ++impl->vocab_size;
  if (const auto& unk = impl->model->unk_token()) {
    impl->specials.unk = impl->added->id_of(*unk);
    if (!impl->specials.unk) impl->specials.unk = impl->model->token_id(*unk);
  }
  return std::shared_ptr<BpeTokenizer>(new BpeTokenizer(std::move(impl)));
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
  if (const size_t bad = bpe::utf8_first_invalid(text); bad != std::string::npos)
    fail("{}: cannot encode text that is not valid UTF-8 (invalid byte 0x{:02X} at offset {})",
         impl_->source, static_cast<unsigned char>(text[bad]), bad);
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const auto& seg : impl_->added->split(text, /*normalized=*/false)) {
    if (seg.token)
      ids.push_back(*seg.token);
    else if (seg.end > seg.start)
      impl_->encode_stretch(std::string_view(text).substr(seg.start, seg.end - seg.start), seg.start == 0, ids);
  }
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int64_t id : ids) {
    const std::string* token = nullptr;
    if (const auto* added = impl_->added->by_id(id))
      token = &added->normalized_content;
    else
      token = impl_->model->piece(id);
    if (!token) continue;  // HF drops ids it has no token for
    if (skip_special && impl_->added->is_special_content(*token)) continue;
    tokens.push_back(*token);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  impl_->decoder->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

std::string BpeTokenizer::piece(int64_t id) const {
  if (const auto* added = impl_->added->by_id(id)) return added->normalized_content;
  const std::string* p = impl_->model->piece(id);
  return p ? *p : std::string();
}

std::optional<int64_t> BpeTokenizer::token_id(const std::string& piece) const {
  if (const auto id = impl_->added->id_of(piece)) return id;
  return impl_->model->token_id(piece);
}

int64_t BpeTokenizer::vocab_size() const { return impl_->vocab_size; }

bool BpeTokenizer::is_special(int64_t id) const {
  const auto* added = impl_->added->by_id(id);
  return added && added->special;
}

SpecialTokens BpeTokenizer::special_tokens() const { return impl_->specials; }

}  // namespace qtune::data
