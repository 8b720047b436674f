#pragma once
// The tokenizer metadata a GGUF export carries (tokenizer.ggml.*, tokenizer.chat_template), as llama.cpp's
// convert_hf_to_gguf.py writes it: a GGUF base's own tokenizer keys are copied as they are; a Hugging Face model's
// tokenizer.model becomes a "llama" vocabulary (pieces, scores, SentencePiece types, added tokens from
// tokenizer_config.json), its byte-level tokenizer.json a "gpt2" vocabulary (tokens by id, merges, control and
// user-defined added tokens) with the tokenizer.ggml.pre that splits as its pre_tokenizer does. Special ids and
// add_bos/add_eos are the ones qtune's tokenizer resolved; vocabularies shorter than the model are padded with
// unused "[PADi]" tokens, as the converter does. What llama.cpp cannot represent is an error naming the file.
#include <cstdint>
#include <functional>
#include <string>

#include "qtune/data/tokenizer.h"
#include "qtune/io/gguf_writer.h"

namespace qtune::exporting {

// `source`: the model directory, .gguf file, tokenizer.model or tokenizer.json the run's tokenizer came from.
// What the GGUF cannot reproduce but still works (a normalizer llama.cpp ignores) goes to `warn`.
io::GgufMetadata gguf_vocab_metadata(const std::string& source, const data::Tokenizer& tok, int64_t model_vocab_size,
                                     const std::function<void(const std::string&)>& warn = {});

}  // namespace qtune::exporting
