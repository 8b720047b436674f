#pragma once
// The {"String": s} | {"Regex": r} patterns of Split, Replace (normalizer and decoder), and Replace's rewrite.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "qtune/data/bpe/json_path.h"
#include "qtune/data/bpe/regex.h"

namespace qtune::data::bpe {

// obj["pattern"] compiled: a String is matched literally (escaped, as HF does), a Regex as written.
std::unique_ptr<Regex> parse_pattern(const nlohmann::json& obj, const JsonPath& at);

// Replace: every match of "pattern" becomes "content".
class ReplacePattern {
 public:
  ReplacePattern(const nlohmann::json& obj, const JsonPath& at);
  std::string apply(const std::string& text) const;

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

}  // namespace qtune::data::bpe
