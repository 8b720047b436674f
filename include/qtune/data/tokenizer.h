#pragma once
// A SentencePiece `tokenizer.model` (BPE or unigram, byte fallback as the model says), with special ids
// taken from the model and overridden by the directory's tokenizer_config.json / config.json when given.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qtune::io {
struct ModelConfig;
}

namespace qtune::data {

class Tokenizer {
 public:
  // `path` is a tokenizer.model file or a model directory holding one. `config` (optional) supplies
  // bos/eos/pad ids that take precedence over the SentencePiece model's.
  static Tokenizer load(const std::string& path, const io::ModelConfig* config = nullptr);

  std::vector<int64_t> encode(const std::string& text, bool add_bos = true, bool add_eos = false) const;
  std::string decode(const std::vector<int64_t>& ids) const;  // special tokens are dropped
  std::string piece(int64_t id) const;
  int64_t piece_id(const std::string& piece) const;  // unk_id() when absent

  int64_t vocab_size() const;
  int64_t bos_id() const { return bos_; }
  int64_t eos_id() const { return eos_; }
  int64_t unk_id() const { return unk_; }
  std::optional<int64_t> pad_id() const { return pad_; }
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
  std::string path_;
  int64_t bos_ = -1, eos_ = -1, unk_ = 0;
  std::optional<int64_t> pad_;
};

// Copies a model directory's tokenizer files (tokenizer.model, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, those present) into `out_dir`, so an exported or trained model directory is complete.
// `source` is a directory, or a tokenizer.model file (copied as tokenizer.model, the rest taken from beside it).
void copy_tokenizer_files(const std::string& source, const std::string& out_dir);

// Trains a SentencePiece BPE model with byte fallback on `corpus_file` and writes `<out_prefix>.model`.
// `remove_extra_whitespaces` false keeps every space, as Llama 2's and Mistral's tokenizers do.
void train_bpe_tokenizer(const std::string& corpus_file, const std::string& out_prefix, int64_t vocab_size,
                         bool remove_extra_whitespaces = true);

}  // namespace qtune::data
