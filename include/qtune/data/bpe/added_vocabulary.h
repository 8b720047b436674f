#pragma once
// tokenizer.json "added_tokens": tokens matched in the text before the model sees it, as HF's AddedVocabulary
// matches them — leftmost-longest, first the tokens with normalized=false on the raw text, then those with
// normalized=true on each normalized stretch between; single_word, lstrip and rstrip as HF applies them. Ids are
// assigned as HF assigns them on load: a content already in the model's vocabulary keeps that id, the others
// take model-vocabulary-size, +1, ... in file order.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "qtune/data/bpe/json_path.h"

namespace qtune::data::bpe {

class BpeModel;
class Normalizer;

struct AddedToken {
  std::string content;
  std::string normalized_content;  // what a normalized=true token is matched as (and decoded from)
  int64_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// A stretch of text: an added token's id, or text the model must tokenize.
struct Segment {
  size_t start, end;                 // bytes of the text it was cut from
  std::optional<int64_t> token;
};

class AddedVocabulary {
 public:
  AddedVocabulary(const nlohmann::json& added_tokens, const BpeModel& model, const Normalizer* normalizer,
                  const JsonPath& at);

  // Cuts `text` at the added tokens of one kind (normalized=false for the raw text, true for normalized text).
  std::vector<Segment> split(std::string_view text, bool normalized) const;

  const AddedToken* by_id(int64_t id) const;
  std::optional<int64_t> id_of(const std::string& content) const;
  bool is_special_content(const std::string& content) const;
  const std::unordered_map<std::string, int64_t>& contents() const { return by_content_; }
  bool empty() const { return tokens_.empty(); }

 private:
  // A byte trie over the contents to match; leftmost-longest search is a walk from each position.
  struct Trie {
    struct Node {
      std::unordered_map<unsigned char, int32_t> next;
      int32_t token = -1;  // index into tokens_ when a content ends here
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};
    void insert(std::string_view s, int32_t token);
    // The longest content starting at text[pos]: (end, token index), or token -1.
    std::pair<size_t, int32_t> longest(std::string_view text, size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, int64_t> by_content_;
  std::unordered_map<int64_t, size_t> by_id_;
  std::unordered_set<std::string> special_;
  Trie raw_, normalized_;
};

}  // namespace qtune::data::bpe
