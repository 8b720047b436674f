#pragma once
// The tokenizer a GGUF file carries in its metadata (tokenizer.ggml.*), as llama.cpp reads it: model "llama"
// becomes a SentencePiece model (pieces, scores and types → a ModelProto), model "gpt2" a byte-level BPE
// tokenizer.json whose pre-tokenizer is the regex sequence llama.cpp assigns to `tokenizer.ggml.pre`.
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>

#include "qtune/data/tokenizer.h"

namespace qtune::io {
class GgufFile;
}

namespace qtune::data {

struct GgufTokenizer {
  std::shared_ptr<const TokenizerBackend> backend;
  SpecialTokens special;      // tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token, add_eos_token
  nlohmann::json tokenizer_json;  // gpt2: the tokenizer.json it was built from (what `qtune convert` writes)
  std::string sentencepiece_proto;  // llama: the serialized ModelProto (written as tokenizer.model)
  std::string chat_template;        // tokenizer.chat_template, empty when absent
};

GgufTokenizer gguf_tokenizer(const io::GgufFile& file);

// The tokenizer.ggml.pre llama.cpp gives a tokenizer.json whose pre_tokenizer splits as `pre_tokenizer` does (the
// first name of its table: "gpt-2", "llama-bpe", "qwen2", "tekken", "smollm"); nullopt when llama.cpp has none.
std::optional<std::string> gguf_pre_tokenizer_name(const nlohmann::json& pre_tokenizer);

// The tokenizer as Hugging Face files in `dir`: tokenizer.json (gpt2) or tokenizer.model (llama), and a
// tokenizer_config.json with the special tokens, add_bos_token/add_eos_token and the chat template; transformers'
// AutoTokenizer loads them and tokenizes as the GGUF's tokenizer does.
void save_tokenizer_files(const GgufTokenizer& tokenizer, const std::string& dir);

}  // namespace qtune::data
