#pragma once
// tokenizer.json "normalizer": NFC, Prepend, Replace (string or regex pattern), ByteLevel and Sequence of them,
// run as HF runs them on each stretch of text between added tokens. Offsets are not tracked: qtune only needs ids.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "qtune/data/bpe/json_path.h"

namespace qtune::data::bpe {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

// nullptr for a null normalizer; fails on a type qtune does not implement.
std::unique_ptr<Normalizer> parse_normalizer(const nlohmann::json& j, const JsonPath& at);

}  // namespace qtune::data::bpe
