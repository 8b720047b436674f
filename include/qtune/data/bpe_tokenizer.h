#pragma once
// A Hugging Face tokenizer.json whose model is BPE: the byte-level vocabularies of GPT-2, Llama 3, Qwen2 and SmolLM2,
// and the SentencePiece-style ones (Metaspace + byte_fallback) that Llama 2 and Mistral ship. The pipeline runs as
// HF tokenizers runs it: added tokens split out, normalizer, pre-tokenizer, BPE model, post-processor, decoder.
// Pre-tokenizer regexes run on Oniguruma (the engine HF tokenizers itself uses). Every component qtune does not
// support is an error naming it and the file, never a silent fallback.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "qtune/data/tokenizer.h"

namespace qtune::data {

class BpeTokenizer : public TokenizerBackend {
 public:
  static std::shared_ptr<BpeTokenizer> load(const std::string& tokenizer_json_path);
  // `source` names the file (or GGUF) in error messages.
  static std::shared_ptr<BpeTokenizer> from_json(const nlohmann::json& tokenizer_json, const std::string& source);
  ~BpeTokenizer() override;

  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override;
  std::string piece(int64_t id) const override;
  std::optional<int64_t> token_id(const std::string& piece) const override;
  int64_t vocab_size() const override;
  bool is_special(int64_t id) const override;
  SpecialTokens special_tokens() const override;
  const char* kind() const override { return "bpe"; }

  struct Impl;

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qtune::data
