#pragma once
// Tokenizer files that are not a tokenizer.json, a SentencePiece model or a GGUF, but that models ship in their
// place: Mistral's tekken.json (mistral-common's format) and tiktoken rank files (Qwen's qwen.tiktoken, Meta's
// original Llama 3 tokenizer.model). qtune does not read them; recognising them turns "missing key 'model'" or a
// SentencePiece parse error into a message that says what the file is and how to get a tokenizer.json from it.
#include <nlohmann/json.hpp>

#include <string>

namespace qtune::data {

// mistral-common's tekken.json: {"config": {"pattern": ...}, "vocab": [{"rank", "token_bytes", ...}], ...}.
bool is_tekken_json(const nlohmann::json& j);
// tiktoken's format: one "<base64 token bytes> <rank>" per line (the first lines decide).
bool is_tiktoken_text(const std::string& head);
bool is_tiktoken_file(const std::string& path);

// "<source>: a Mistral Tekken tokenizer ...; qtune cannot read it: ..." and the same for tiktoken.
[[noreturn]] void fail_tekken(const std::string& source);
[[noreturn]] void fail_tiktoken(const std::string& source);

}  // namespace qtune::data
