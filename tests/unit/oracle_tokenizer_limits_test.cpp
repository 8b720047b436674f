// qtune's tokenizer loading on files at the edges, against what HF tokenizers does with the same files (the
// oracle_tokenizer_limits fixture, tests/oracle/tokenizer_limits.py): one huge id costs a map entry, not a table of
// that size; Sequences nested past serde_json's limit are an error naming the file, never a stack overflow; a raw
// Tekken file is named for what it is and its transformers conversion reads as HF reads it; the warning about
// reassigned ids goes to stderr, so `qtune tokenize --json` still prints one JSON object.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/bpe_tokenizer.h"
#include "qtune/data/tokenizer.h"
#include "qtune/util/memory.h"
#include "test_util.h"

namespace {

using nlohmann::json;
using qtune::data::BpeTokenizer;
using qtune::data::Tokenizer;

std::string oracle_root() { return qtune::test::oracle_dir() + "/tokenizer_limits"; }

#define REQUIRE_LIMITS_ORACLE()                                                                               \
  do {                                                                                                        \
    if (!std::filesystem::exists(oracle_root() + "/reassigned/expected.json"))                                \
      GTEST_FAIL() << oracle_root() << " is incomplete: run through ctest (the oracle_tokenizer_limits fixture)"; \
  } while (0)

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);
}

// HF's ids and decoded text for every text of expected.json.
void expect_same_as_hf(const BpeTokenizer& tok, const json& expected) {
  const auto& texts = expected["texts"];
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto text = texts[i].get<std::string>();
    const auto want = expected["ids"][i].get<std::vector<int64_t>>();
    EXPECT_EQ(tok.encode(text), want) << text;
    if (i < expected["decode"].size()) EXPECT_EQ(tok.decode(want, false), expected["decode"][i].get<std::string>());
  }
  EXPECT_EQ(tok.vocab_size(), expected["vocab_size"].get<int64_t>());
}

// A 6 KB file whose one token has id 400,000,000: a table indexed by id would take 3.2 GB; HF keeps a map.
TEST(OracleTokenizerLimits, OneHugeIdCostsAMapEntryNotATable) {
  REQUIRE_LIMITS_ORACLE();
  const std::string dir = oracle_root() + "/sparse_ids";
  const auto expected = read_json(dir + "/expected.json");
  const int64_t before = qtune::current_rss_bytes();
  const auto tok = BpeTokenizer::load(dir + "/tokenizer.json");
  const int64_t grown = qtune::current_rss_bytes() - before;
  EXPECT_LT(grown, 64ll << 20) << "loading a 6 KB tokenizer.json grew the process by " << qtune::format_bytes(grown);
  expect_same_as_hf(*tok, expected);
  for (const auto& [id, piece] : expected["pieces"].items())
    EXPECT_EQ(tok->piece(std::stoll(id)), piece.is_null() ? std::string() : piece.get<std::string>()) << id;
  const int64_t huge = expected["huge_id"].get<int64_t>();
  EXPECT_EQ(tok->token_id(expected["huge_piece"].get<std::string>()), huge);
  EXPECT_EQ(tok->decode({huge, 0, huge - 1}, false), expected["huge_decode"].get<std::string>());
}

// HF loads a Sequence nested 62 times and refuses 63 (serde_json's recursion limit); qtune draws the line at the
// same place for every component, and 60,000 levels are an error naming the file instead of a stack overflow.
TEST(OracleTokenizerLimits, NestingPastHfsLimitIsAnErrorNamingTheFile) {
  REQUIRE_LIMITS_ORACLE();
  const std::string dir = oracle_root() + "/nested";
  const auto hf = read_json(dir + "/hf.json");
  ASSERT_EQ(hf.size(), 12u);
  for (const auto& [name, verdict] : hf.items()) {
    SCOPED_TRACE(name);
    const std::string path = dir + "/" + name;
    const bool hf_loads = verdict.get<std::string>() == "loads";
    if (hf_loads) {
      EXPECT_NO_THROW(BpeTokenizer::load(path));
      continue;
    }
    const auto message = qtune::test::error_of([&] { BpeTokenizer::load(path); });
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("nested more than 127 levels"), std::string::npos) << message;
  }
}

// mistral-common's tekken.json is not a tokenizer.json: the error says what it is and how to convert it, as a
// file and as a model directory holding it; transformers' conversion of it then reads as HF reads it.
TEST(OracleTokenizerLimits, ATekkenFileIsNamedAndItsConversionReadsAsHf) {
  REQUIRE_LIMITS_ORACLE();
  const std::string raw = oracle_root() + "/tekken/tekken.json";
  for (const auto& given : {raw, oracle_root() + "/tekken"}) {
    SCOPED_TRACE(given);
    const auto message = qtune::test::error_of([&] { Tokenizer::load(given); });
    EXPECT_NE(message.find(raw), std::string::npos) << message;
    EXPECT_NE(message.find("Mistral Tekken tokenizer"), std::string::npos) << message;
    EXPECT_NE(message.find("cannot read it"), std::string::npos) << message;
    EXPECT_NE(message.find("save_pretrained"), std::string::npos) << message;
  }
  const std::string converted = oracle_root() + "/tekken_converted";
  expect_same_as_hf(*BpeTokenizer::load(converted + "/tokenizer.json"), read_json(converted + "/expected.json"));
}

// Added tokens declared at ids HF reassigns: HF's ids, one warning for them all, on stderr; stdout stays the
// command's output.
TEST(OracleTokenizerLimits, TokenizeJsonStaysOneJsonObjectWhenTheFileWarns) {
  REQUIRE_LIMITS_ORACLE();
  const std::string dir = oracle_root() + "/reassigned";
  const auto expected = read_json(dir + "/expected.json");
  const std::string text = expected["texts"].back().get<std::string>();
  const auto run = qtune::test::run_qtune("tokenize " + dir + "/tokenizer.json '" + text + "' --json --no-special");
  ASSERT_EQ(run.code, 0) << run.err;
  json out;
  ASSERT_NO_THROW(out = json::parse(run.out)) << "stdout is not one JSON object:\n" << run.out;
  EXPECT_EQ(out["ids"].get<std::vector<int64_t>>(), expected["ids"].back().get<std::vector<int64_t>>());
  EXPECT_NE(run.err.find("was expected to have id"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("50 added tokens"), std::string::npos) << run.err;
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  expect_same_as_hf(*BpeTokenizer::load(dir + "/tokenizer.json"), expected);
}

}  // namespace
