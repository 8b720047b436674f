#pragma once
// tokenizer.json "pre_tokenizer": Split, ByteLevel, Digits, Metaspace and Sequence of them. Each one cuts every
// piece of text it is given into smaller pieces (and may rewrite them: ByteLevel maps bytes into its alphabet,
// Metaspace spaces into "▁"), exactly as HF's PreTokenizedString::split does; empty pieces are dropped.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "qtune/data/bpe/json_path.h"

namespace qtune::data::bpe {

struct Piece {
  std::string text;
  bool at_start;  // the piece begins at offset 0 of the original text (Metaspace's prepend_scheme "first")
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// nullptr for a null pre-tokenizer; fails on a type or option qtune does not implement.
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const nlohmann::json& j, const JsonPath& at);

}  // namespace qtune::data::bpe
