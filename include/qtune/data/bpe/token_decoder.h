#pragma once
// tokenizer.json "decoder": ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace and Sequence, each HF's
// decode_chain over the list of token strings; the results are joined at the end.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "qtune/data/bpe/json_path.h"

namespace qtune::data::bpe {

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// nullptr for a null decoder (HF then joins the tokens with spaces); fails on a type qtune does not implement.
std::unique_ptr<TokenDecoder> parse_decoder(const nlohmann::json& j, const JsonPath& at);

}  // namespace qtune::data::bpe
