#include "qtune/data/bpe/bpe_model.h"

#include <fmt/format.h>

#include <mutex>
#include <queue>

#include "qtune/data/bpe/utf8.h"
#include "qtune/util/error.h"

namespace qtune::data::bpe {

using nlohmann::json;

namespace {

// The two halves of one merges entry: "a b" (older files) or ["a", "b"].
std::pair<std::string, std::string> merge_pair(const json& m, size_t rank, const JsonPath& at) {
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return {m[0].get<std::string>(), m[1].get<std::string>()};
  if (m.is_string()) {
    const auto s = m.get<std::string>();
    const size_t space = s.find(' ');
    if (space != std::string::npos && s.find(' ', space + 1) == std::string::npos)
      return {s.substr(0, space), s.substr(space + 1)};
  }
  fail("{}: merge {} must be \"a b\" or [\"a\", \"b\"], got {}", at.str(), rank + 1, m.dump());
}

}  // namespace

BpeModel::BpeModel(const json& model, const JsonPath& at) : where_(at.str()) {
  if (!model.is_object()) fail("{}: expected a JSON object, got {}", at.str(), model.type_name());
  // Files from before models were tagged have no "type"; HF then reads one with merges as a BPE.
  const std::string type = json_string(model, "type", at, model.contains("merges") ? "BPE" : "");
  if (type.empty()) fail("{}: missing key 'type' (and no 'merges', so not a BPE)", at.str());
  if (type != "BPE") unsupported_type(at, type, "BPE");

  if (const auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0)
      fail("{}: dropout {} is not supported (tokenization must be deterministic): set it to null", at.str(), it->dump());
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const std::string v = json_string(model, key, at, "");
    if (!v.empty()) fail("{}: {} '{}' is not supported (only empty or null)", at.str(), key, v);
  }
  fuse_unk_ = json_bool(model, "fuse_unk", at, false);
  byte_fallback_ = json_bool(model, "byte_fallback", at, false);
  ignore_merges_ = json_bool(model, "ignore_merges", at, false);
  if (const auto it = model.find("unk_token"); it != model.end() && !it->is_null()) unk_token_ = json_string(model, "unk_token", at);

  const JsonPath vocab_at = at.key("vocab");
  const json& vocab = json_require(model, "vocab", at);
  if (!vocab.is_object()) fail("{}: expected an object {{token: id}}, got {}", vocab_at.str(), vocab.type_name());
  vocab_.reserve(vocab.size());
  int64_t max_id = -1;
  for (const auto& [piece, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      fail("{}: the id of '{}' must be a non-negative integer, got {}", vocab_at.str(), piece, id.dump());
    vocab_[piece] = static_cast<int32_t>(id.get<int64_t>());
    max_id = std::max(max_id, id.get<int64_t>());
  }
  // A table of max_id + 1 entries costs 8 bytes per id; past twice the tokens (plus slack for small files) the ids
  // are sparse and a map costs less.
  if (max_id < 2 * static_cast<int64_t>(vocab_.size()) + 1024) {
    by_id_.assign(static_cast<size_t>(max_id + 1), nullptr);
    for (const auto& [piece, id] : vocab_) by_id_[id] = &piece;
  } else {
    sparse_by_id_.reserve(vocab_.size());
    for (const auto& [piece, id] : vocab_) sparse_by_id_[id] = &piece;
  }
  if (unk_token_)
    if (const auto it = vocab_.find(*unk_token_); it != vocab_.end()) unk_id_ = it->second;
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  const JsonPath merges_at = at.key("merges");
  const json& merges = json_require(model, "merges", at);
  if (!merges.is_array()) fail("{}: expected a list, got {}", merges_at.str(), merges.type_name());
  merges_.reserve(merges.size());
  uint32_t rank = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    if (merges[i].is_string() && merges[i].get_ref<const std::string&>().rfind("#version", 0) == 0) continue;
    const auto [a, b] = merge_pair(merges[i], rank, merges_at);
    auto id_of = [&](const std::string& piece) {
      const auto it = vocab_.find(piece);
      if (it == vocab_.end())
        fail("{}: merge {} (\"{} {}\") names the token '{}', which is not in the vocabulary", merges_at.str(), rank + 1,
             a, b, piece);
      return it->second;
    };
    const int32_t ia = id_of(a), ib = id_of(b), merged = id_of(a + b);
    merges_[pair_key(ia, ib)] = Merge{rank, merged};  // a repeated pair keeps its last rank, as HF's map does
    ++rank;
  }
}

std::optional<int64_t> BpeModel::token_id(const std::string& piece) const {
  const auto it = vocab_.find(piece);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::piece(int64_t id) const {
  if (id < 0 || id > INT32_MAX) return nullptr;
  if (!sparse_by_id_.empty()) {
    const auto it = sparse_by_id_.find(static_cast<int32_t>(id));
    return it == sparse_by_id_.end() ? nullptr : it->second;
  }
  if (id >= static_cast<int64_t>(by_id_.size())) return nullptr;
  return by_id_[id];
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t c;
    int32_t prev, next;
    uint32_t len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t c, uint32_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({c, n - 1, -1, len});
  };

  // Characters to ids: the vocabulary, else their <0xXX> bytes, else unk (fused or not), else dropped — as HF does.
  int32_t unk_id = -1;  // a pending unk (fuse_unk grows it), -1 when none
  uint32_t unk_len = 0;
  std::string ch;
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(utf8_char_len(static_cast<unsigned char>(word[i])), word.size() - i);
    ch.assign(word.data() + i, n);
    i += n;
    if (const auto it = vocab_.find(ch); it != vocab_.end()) {
      if (unk_id >= 0) add(unk_id, unk_len), unk_id = -1;
      add(it->second, static_cast<uint32_t>(n));
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (const char b : ch) all = all && byte_ids_[static_cast<uint8_t>(b)] >= 0;
      if (all) {
        for (const char b : ch) add(byte_ids_[static_cast<uint8_t>(b)], 1);
        continue;
      }
    }
    if (unk_token_) {
      if (!unk_id_) fail("{}: unk_token '{}' is not in the vocabulary", where_, *unk_token_);
      if (unk_id >= 0 && fuse_unk_) {
        unk_len += static_cast<uint32_t>(n);
      } else {
        if (unk_id >= 0) add(unk_id, unk_len);
        unk_id = *unk_id_, unk_len = static_cast<uint32_t>(n);
      }
    }
  }
  if (unk_id >= 0) add(unk_id, unk_len);

  // HF's Word::merge_all: the lowest-ranked pair first, the leftmost among equals; stale entries are skipped.
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  auto later = [](const Candidate& x, const Candidate& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  auto push = [&](int32_t pos, int32_t a, int32_t b) {
    const auto it = merges_.find(pair_key(a, b));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) push(static_cast<int32_t>(i), symbols[i].c, symbols[i + 1].c);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next == -1) continue;
    const Symbol right = symbols[left.next];
    const auto it = merges_.find(pair_key(left.c, right.c));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    const int32_t removed = left.next;
    left.c = top.new_id;
    left.len += right.len;
    left.next = right.next;
    symbols[removed].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev, symbols[left.prev].c, left.c);
    if (left.next >= 0) push(top.pos, left.c, symbols[left.next].c);
  }
  for (const auto& s : symbols)
    if (s.len != 0) ids.push_back(s.c);
}

void BpeModel::tokenize(std::string_view word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  thread_local std::string key;
  key.assign(word.data(), word.size());
  if (ignore_merges_) {
    if (const auto it = vocab_.find(key); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::shared_lock lock(cache_mutex_);
    if (const auto it = cache_.find(key); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() < kCacheMaxWordLen) {
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(key, std::move(ids));
  }
}

}  // namespace qtune::data::bpe
