#pragma once
// tokenizer.json "model" of type BPE: the vocabulary, the ranked merges, and HF's merge loop (lowest rank first,
// leftmost on ties), with ignore_merges (a pre-token that is itself in the vocabulary is taken whole),
// byte_fallback (<0xXX> tokens for characters the vocabulary lacks) and unk_token / fuse_unk. Results are cached
// per pre-token, as HF caches them.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "qtune/data/bpe/json_path.h"

namespace qtune::data::bpe {

class BpeModel {
 public:
  BpeModel(const nlohmann::json& model, const JsonPath& at);

  // Appends the ids of one pre-token.
  void tokenize(std::string_view word, std::vector<int64_t>& out) const;

  std::optional<int64_t> token_id(const std::string& piece) const;
  const std::string* piece(int64_t id) const;  // nullptr when no token has this id
  int64_t size() const { return static_cast<int64_t>(vocab_.size()); }
  const std::optional<std::string>& unk_token() const { return unk_token_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;

  std::string where_;  // "<file>: model", for errors at encode time
  std::unordered_map<std::string, int32_t> vocab_;
  // id -> piece, pointing into vocab_'s keys: a table when the ids are about as many as the tokens (every real
  // vocabulary), a hash map when they are sparse, so that one huge id costs no table of that size (HF keeps a map).
  std::vector<const std::string*> by_id_;
  std::unordered_map<int32_t, const std::string*> sparse_by_id_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<std::string> unk_token_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256];  // <0xXX> ids, -1 where absent

  // HF's cache: words under 256 bytes, at most 10 000 of them.
  static constexpr size_t kCacheCapacity = 10000, kCacheMaxWordLen = 256;
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace qtune::data::bpe
