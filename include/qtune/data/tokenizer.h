#pragma once
// A model's tokenizer, whatever file it comes from: a Hugging Face tokenizer.json (byte-level or SentencePiece-style
// BPE, data/bpe_tokenizer.h), a SentencePiece tokenizer.model (data/sentencepiece_tokenizer.h) or a GGUF file's
// tokenizer metadata (data/gguf_tokenizer.h). Chosen as transformers chooses: tokenizer.json when present, else
// tokenizer.model; a .gguf path uses its metadata. Special ids come from the tokenizer file and are overridden by
// the directory's tokenizer_config.json, then by config.json / generation_config.json when given.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace qtune::io {
struct ModelConfig;
}

namespace qtune::data {

// What a tokenizer file says about its special tokens. add_bos/add_eos: what encoding "with special tokens" adds
// (HF's post-processor template, SentencePiece's add_bos, GGUF's tokenizer.ggml.add_bos_token).
struct SpecialTokens {
  std::optional<int64_t> bos, eos, unk, pad;
  bool add_bos = false;
  bool add_eos = false;
};

// One tokenizer implementation. encode() is HF's encode(text, add_special_tokens=False): no BOS/EOS is added, but
// special tokens written in the text ("<|im_end|>", "<|eot_id|>") are split out first and become their ids.
class TokenizerBackend {
 public:
  virtual ~TokenizerBackend() = default;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // HF's decode(ids, skip_special_tokens=skip_special); ids outside the vocabulary decode to nothing.
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special) const = 0;
  virtual std::string piece(int64_t id) const = 0;                              // as stored: "Ġthe", "▁the", "<0x0A>"
  virtual std::optional<int64_t> token_id(const std::string& piece) const = 0;  // vocabulary or added token
  virtual int64_t vocab_size() const = 0;                                       // added tokens included
  virtual bool is_special(int64_t id) const = 0;
  virtual SpecialTokens special_tokens() const = 0;
  virtual const char* kind() const = 0;  // "sentencepiece" | "bpe"
};

class Tokenizer {
 public:
  // `path`: a model directory, a tokenizer.json, a tokenizer.model or a .gguf file. `config` (optional) supplies
  // bos/eos/pad ids that take precedence over the tokenizer files'.
  static Tokenizer load(const std::string& path, const io::ModelConfig* config = nullptr);
  // A backend built elsewhere (tests, a GGUF already open); `path` names it in messages.
  static Tokenizer from_backend(std::shared_ptr<const TokenizerBackend> backend, std::string path);

  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos = false) const;
  // With what the tokenizer itself adds (its add_bos/add_eos), as HF's encode(text) does.
  std::vector<int64_t> encode(const std::string& text) const { return encode(text, add_bos_, add_eos_); }
  std::string decode(const std::vector<int64_t>& ids) const;  // special tokens are dropped
  std::string piece(int64_t id) const;
  int64_t piece_id(const std::string& piece) const;              // unk_id() when absent
  std::optional<int64_t> token_id(const std::string& piece) const;  // nullopt when absent

  int64_t vocab_size() const;
  int64_t bos_id() const { return bos_; }
  int64_t eos_id() const { return eos_; }
  int64_t unk_id() const { return unk_; }
  std::optional<int64_t> pad_id() const { return pad_; }
  bool adds_bos() const { return add_bos_; }  // the tokenizer's own choice (Llama: yes; SmolLM2, Qwen: no)
  bool adds_eos() const { return add_eos_; }
  const std::string& path() const { return path_; }
  const TokenizerBackend& backend() const { return *impl_; }

 private:
  static Tokenizer with_special_tokens(std::shared_ptr<const TokenizerBackend> backend, std::string path,
                                       const SpecialTokens& special);
  std::shared_ptr<const TokenizerBackend> impl_;
  std::string path_;
  int64_t bos_ = -1, eos_ = -1, unk_ = -1;
  std::optional<int64_t> pad_;
  bool add_bos_ = false, add_eos_ = false;
};

// Copies a model directory's tokenizer files (tokenizer.model, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, the chat templates chat_template.jinja and additional_chat_templates/, those present) into
// `out_dir`, so an exported or trained model directory is complete.
// `source` is a directory, or a tokenizer.model file (copied as tokenizer.model, the rest taken from beside it).
void copy_tokenizer_files(const std::string& source, const std::string& out_dir);

// Trains a SentencePiece BPE model with byte fallback on `corpus_file` and writes `<out_prefix>.model`.
// `remove_extra_whitespaces` false keeps every space, as Llama 2's and Mistral's tokenizers do.
void train_bpe_tokenizer(const std::string& corpus_file, const std::string& out_prefix, int64_t vocab_size,
                         bool remove_extra_whitespaces = true);

}  // namespace qtune::data
