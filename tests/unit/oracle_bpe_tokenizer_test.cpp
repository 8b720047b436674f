// qtune's tokenizer.json BPE against HF tokenizers on the same files: the oracle fixture
// (tests/oracle/bpe_tokenizers.py) wrote one tokenizer.json per layout (SmolLM2's real one, Llama 3, Qwen2, GPT-2,
// SentencePiece-style, ...) and recorded HF's ids and decoded text for a multilingual corpus; BpeTokenizer must
// reproduce every one. It also wrote malformed files, whose errors must name the file and the key at fault.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "qtune/data/bpe_tokenizer.h"
#include "test_util.h"

namespace {

using nlohmann::json;
using qtune::data::BpeTokenizer;

constexpr int kMismatchesShown = 3;  // per layout and check; the count of all of them is reported too

std::string oracle_root() { return qtune::test::oracle_dir() + "/bpe_tokenizers"; }

#define REQUIRE_BPE_ORACLE()                                                                                   \
  do {                                                                                                         \
    if (!std::filesystem::exists(oracle_root() + "/manifest.json"))                                            \
      GTEST_FAIL() << oracle_root() << "/manifest.json is missing: run through ctest (the oracle_bpe_tokenizers fixture)"; \
  } while (0)

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);
}

// A string with its control characters and non-UTF-8 bytes visible, for failure messages.
std::string show(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\r')
      out += "\\r";
    else if (c == '"' || c == '\\')
      out += std::string("\\") + c;
    else if (u < 0x20 || u == 0x7F)
      out += fmt::format("\\x{:02x}", u);
    else
      out += c;
  }
  return out + "\"";
}

std::string show(const std::vector<int64_t>& ids) { return fmt::format("[{}]", fmt::join(ids, ", ")); }
std::string show(int64_t id) { return std::to_string(id); }

// Counts mismatches of one check over the corpus and reports the first few with their input.
class Mismatches {
 public:
  Mismatches(std::string layout, std::string check) : layout_(std::move(layout)), check_(std::move(check)) {}
  ~Mismatches() {
    if (count_ > 0) ADD_FAILURE() << layout_ << ": " << check_ << ": " << count_ << " of " << total_ << " differ from HF";
  }
  template <typename T>
  void compare(const std::string& input, const T& got, const T& expected) {
    ++total_;
    if (got == expected) return;
    if (count_++ < kMismatchesShown)
      ADD_FAILURE() << layout_ << ": " << check_ << " of " << show(input) << "\n  qtune: " << show(got)
                    << "\n  HF:    " << show(expected);
  }

 private:
  std::string layout_, check_;
  int count_ = 0, total_ = 0;
};

void check_layout(const std::string& layout) {
  const std::string dir = oracle_root() + "/" + layout;
  const auto manifest = read_json(oracle_root() + "/manifest.json");
  if (manifest["skipped"].contains(layout))
    GTEST_SKIP() << layout << " was not recorded: " << manifest["skipped"][layout].get<std::string>();
  ASSERT_TRUE(std::filesystem::exists(dir + "/expected.json")) << dir;
  const auto expected = read_json(dir + "/expected.json");
  const auto tok = BpeTokenizer::load(dir + "/tokenizer.json");
  const auto specials = tok->special_tokens();

  const auto& want_special = expected["special"];
  auto opt = [](const json& v) { return v.is_null() ? std::optional<int64_t>() : std::optional<int64_t>(v.get<int64_t>()); };
  EXPECT_EQ(specials.bos, opt(want_special["bos"])) << layout << ": bos";
  EXPECT_EQ(specials.eos, opt(want_special["eos"])) << layout << ": eos";
  EXPECT_EQ(specials.unk, opt(want_special["unk"])) << layout << ": unk";
  EXPECT_EQ(specials.add_bos, want_special["add_bos"].get<bool>()) << layout << ": add_bos";
  EXPECT_EQ(specials.add_eos, want_special["add_eos"].get<bool>()) << layout << ": add_eos";
  EXPECT_FALSE(specials.pad.has_value()) << layout << ": pad comes from tokenizer_config.json, not tokenizer.json";
  EXPECT_EQ(tok->vocab_size(), expected["vocab_size"].get<int64_t>()) << layout << ": vocab_size";

  Mismatches encode(layout, "encode"), with_specials(layout, "encode with special tokens"),
      decode(layout, "decode(ids)"), decode_specials(layout, "decode(ids with specials, skip_special=false)"),
      decode_skip(layout, "decode(ids with specials, skip_special=true)");
  const auto& texts = expected["texts"];
  const auto& cases = expected["cases"];
  ASSERT_EQ(texts.size(), cases.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i].get<std::string>();
    const auto& c = cases[i];
    const auto want_ids = c["ids"].get<std::vector<int64_t>>();
    const auto want_special_ids = c["ids_special"].get<std::vector<int64_t>>();
    std::vector<int64_t> ids = tok->encode(text);
    encode.compare(text, ids, want_ids);
    if (specials.add_bos) ids.insert(ids.begin(), *specials.bos);
    if (specials.add_eos) ids.push_back(*specials.eos);
    with_specials.compare(text, ids, want_special_ids);
    decode.compare(text, tok->decode(want_ids, false), c["decode"].get<std::string>());
    decode_specials.compare(text, tok->decode(want_special_ids, false), c["decode_special"].get<std::string>());
    decode_skip.compare(text, tok->decode(want_special_ids, true), c["decode_special_skip"].get<std::string>());
  }

  Mismatches decode_keep(layout, "decode(random ids)"), decode_skip_random(layout, "decode(random ids, skip)");
  for (const auto& c : expected["decode_only"]) {
    const auto ids = c["ids"].get<std::vector<int64_t>>();
    decode_keep.compare(show(ids), tok->decode(ids, false), c["keep"].get<std::string>());
    decode_skip_random.compare(show(ids), tok->decode(ids, true), c["skip"].get<std::string>());
  }

  Mismatches pieces(layout, "piece(id)"), token_ids(layout, "token_id(piece)");
  for (const auto& [id, piece] : expected["pieces"].items())
    pieces.compare(id, tok->piece(std::stoll(id)), piece.is_null() ? std::string() : piece.get<std::string>());
  for (const auto& [piece, id] : expected["token_ids"].items())
    token_ids.compare(piece, tok->token_id(piece).value_or(-1), id.get<int64_t>());
  for (const auto& piece : expected["absent_tokens"])
    EXPECT_FALSE(tok->token_id(piece.get<std::string>()).has_value()) << layout << ": " << piece;
}

TEST(OracleBpeTokenizer, CoversTheLayouts) {
  REQUIRE_BPE_ORACLE();
  const auto manifest = read_json(oracle_root() + "/manifest.json");
  std::set<std::string> layouts;
  for (const auto& l : manifest["layouts"]) layouts.insert(l.get<std::string>());
  for (const auto& l : manifest["skipped"].items()) layouts.insert(l.key());
  for (const char* want : {"smollm2", "llama3", "qwen2", "gpt2", "sp_metaspace", "sp_llama2", "mixed", "metaspace_always"})
    EXPECT_TRUE(layouts.count(want)) << want;
}

TEST(OracleBpeTokenizer, SmolLM2) { REQUIRE_BPE_ORACLE(); check_layout("smollm2"); }
TEST(OracleBpeTokenizer, Llama3) { REQUIRE_BPE_ORACLE(); check_layout("llama3"); }
TEST(OracleBpeTokenizer, Qwen2) { REQUIRE_BPE_ORACLE(); check_layout("qwen2"); }
TEST(OracleBpeTokenizer, Gpt2) { REQUIRE_BPE_ORACLE(); check_layout("gpt2"); }
TEST(OracleBpeTokenizer, SentencePieceMetaspace) { REQUIRE_BPE_ORACLE(); check_layout("sp_metaspace"); }
TEST(OracleBpeTokenizer, SentencePieceLlama2Normalizer) { REQUIRE_BPE_ORACLE(); check_layout("sp_llama2"); }
TEST(OracleBpeTokenizer, MixedPreTokenizers) { REQUIRE_BPE_ORACLE(); check_layout("mixed"); }
TEST(OracleBpeTokenizer, MetaspaceAlways) { REQUIRE_BPE_ORACLE(); check_layout("metaspace_always"); }

// Each malformed file's error names the file and what is wrong with it.
TEST(OracleBpeTokenizer, MalformedFilesNameTheFileAndTheKey) {
  REQUIRE_BPE_ORACLE();
  const std::string dir = oracle_root() + "/errors";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"truncated.json", {"not valid JSON"}},
      {"not_json.json", {"not valid JSON"}},
      {"no_model.json", {"missing key 'model'"}},
      {"no_merges.json", {"model", "missing key 'merges'"}},
      {"no_vocab.json", {"model", "missing key 'vocab'"}},
      {"unknown_pre_tokenizer.json", {"pre_tokenizer type 'Whitespace' is not supported", "Metaspace"}},
      {"unknown_normalizer.json", {"normalizer type 'Lowercase' is not supported", "NFC"}},
      {"unknown_decoder.json", {"decoder type 'WordPiece' is not supported", "ByteFallback"}},
      {"unknown_model.json", {"model type 'WordPiece' is not supported"}},
      {"unknown_post_processor.json", {"post_processor type 'BertProcessing' is not supported"}},
      {"bad_regex.json", {"pre_tokenizer.pattern", "(unclosed[a-", "Oniguruma"}},
      {"merge_not_in_vocab.json", {"model.merges", "merge 1", "Ġqtunezz", "not in the vocabulary"}},
      {"dropout.json", {"model", "dropout"}},
  };
  for (const auto& [file, needles] : cases) {
    SCOPED_TRACE(file);
    const std::string message = qtune::test::error_of([&] { BpeTokenizer::load(dir + "/" + file); });
    EXPECT_NE(message.find(dir + "/" + file), std::string::npos) << message;
    for (const auto& needle : needles) EXPECT_NE(message.find(needle), std::string::npos) << "'" << needle << "' in: " << message;
  }
  const std::string missing = qtune::test::error_of([&] { BpeTokenizer::load(dir + "/no_such_file.json"); });
  EXPECT_NE(missing.find("no_such_file.json"), std::string::npos) << missing;
  EXPECT_NE(missing.find("cannot read"), std::string::npos) << missing;
}

TEST(OracleBpeTokenizer, RejectsTextThatIsNotUtf8) {
  REQUIRE_BPE_ORACLE();
  const auto tok = BpeTokenizer::load(oracle_root() + "/llama3/tokenizer.json");
  const std::string message = qtune::test::error_of([&] { tok->encode("ok \xC3\x28 bad"); });
  EXPECT_NE(message.find("not valid UTF-8"), std::string::npos) << message;
  EXPECT_NE(message.find("offset 3"), std::string::npos) << message;
}

// encode() is const and shares the per-word cache: many threads at once must each get HF's ids.
TEST(OracleBpeTokenizer, EncodesTheSameFromManyThreads) {
  REQUIRE_BPE_ORACLE();
  const std::string dir = oracle_root() + "/llama3";
  const auto expected = read_json(dir + "/expected.json");
  const auto tok = BpeTokenizer::load(dir + "/tokenizer.json");
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (size_t t = 0; t < mismatches.size(); ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        for (size_t i = 0; i < expected["texts"].size(); ++i)
          mismatches[t] += tok->encode(expected["texts"][i].get<std::string>()) !=
                           expected["cases"][i]["ids"].get<std::vector<int64_t>>();
    });
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < mismatches.size(); ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

// Not a benchmark, a record: ids per second on about 1 MiB of the corpus, single-threaded, cold cache.
TEST(OracleBpeTokenizer, ThroughputOnOneMebibyte) {
  REQUIRE_BPE_ORACLE();
  const auto manifest = read_json(oracle_root() + "/manifest.json");
  for (const auto& layout : manifest["layouts"]) {
    const std::string dir = oracle_root() + "/" + layout.get<std::string>();
    const auto expected = read_json(dir + "/expected.json");
    std::string corpus;
    while (corpus.size() < (1u << 20))
      for (const auto& t : expected["texts"]) corpus += t.get<std::string>() + "\n";
    const auto tok = BpeTokenizer::load(dir + "/tokenizer.json");
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok->encode(corpus);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("[ throughput ] %-18s %7.2f MiB  %9zu ids  %7.3f s  %10.0f ids/s\n", layout.get<std::string>().c_str(),
                corpus.size() / 1048576.0, ids.size(), s, ids.size() / s);
    EXPECT_FALSE(ids.empty());
  }
}

}  // namespace
