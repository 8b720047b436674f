#pragma once
// A SentencePiece model (BPE or unigram, byte fallback as the model says): a tokenizer.model file, or a ModelProto
// serialized in memory (what a GGUF "llama" tokenizer becomes, data/gguf_tokenizer.h). As llama.cpp and transformers
// tokenize, special pieces written in the text ("<s>", "<|im_start|>", a user-defined "<tool>") are cut out first and
// become their ids, and each stretch of text between them is encoded on its own, with the dummy prefix "▁" (llama.cpp's
// SPM tokenizer; transformers' legacy Llama tokenizer). Decoding is transformers' LlamaTokenizer decoder: special
// pieces, <unk> among them, are skipped or kept as their text.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qtune/data/tokenizer.h"

namespace qtune::data {

class SentencePieceTokenizer : public TokenizerBackend {
 public:
  static std::shared_ptr<SentencePieceTokenizer> load(const std::string& model_path);
  // `source` names the proto's origin in messages. `matched_ids`: the pieces cut out of the text before the model
  // sees it; by default every CONTROL, USER_DEFINED and UNKNOWN piece (what a tokenizer.model's types say).
  static std::shared_ptr<SentencePieceTokenizer> from_serialized_proto(
      const std::string& proto, const std::string& source,
      const std::optional<std::vector<int64_t>>& matched_ids = std::nullopt);
  ~SentencePieceTokenizer() override;

  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override;
  std::string piece(int64_t id) const override;
  std::optional<int64_t> token_id(const std::string& piece) const override;
  int64_t vocab_size() const override;
  bool is_special(int64_t id) const override;  // CONTROL and UNKNOWN pieces
  SpecialTokens special_tokens() const override;
  const char* kind() const override { return "sentencepiece"; }

  // Every piece with its score and SentencePiece type (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5,
  // BYTE 6: also llama.cpp's token types), what a GGUF "llama" vocabulary stores.
  struct Piece {
    std::string text;
    float score = 0;
    int type = 1;
  };
  std::vector<Piece> pieces() const;
  bool adds_dummy_prefix() const;  // the normalizer's add_dummy_prefix (GGUF: tokenizer.ggml.add_space_prefix)
  bool removes_extra_whitespaces() const;  // the normalizer collapses whitespace runs (llama.cpp never does)

  struct Impl;

 private:
  SentencePieceTokenizer(std::unique_ptr<Impl> impl, std::string source);
  std::unique_ptr<Impl> impl_;
  std::string source_;
};

}  // namespace qtune::data
