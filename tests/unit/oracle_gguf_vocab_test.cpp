// export/gguf_vocab.h on the tokenizer.json layouts HF tokenizers wrote for the OracleBpeTokenizer tests: each
// byte-level layout gets the tokenizer.ggml.pre llama.cpp names its pre-tokenizer by, and the vocabulary written into
// a GGUF, read back the way llama.cpp reads it (data/gguf_tokenizer.h), tokenizes the oracle's corpus as HF tokenizers
// did; SentencePiece-style (Metaspace) layouts, which llama.cpp's converter only takes from a tokenizer.model, are
// refused with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/gguf_tokenizer.h"
#include "qtune/data/tokenizer.h"
#include "qtune/export/gguf_vocab.h"
#include "qtune/io/gguf.h"
#include "qtune/io/gguf_writer.h"
#include "test_util.h"

namespace {

std::string layout_dir(const std::string& name) { return qtune::test::oracle_dir() + "/bpe_tokenizers/" + name; }

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

class OracleGgufVocab : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(OracleGgufVocab, ByteLevelLayoutRoundTripsThroughGgufMetadata) {
  const auto [layout, pre] = GetParam();
  const auto dir = layout_dir(layout);
  if (!std::filesystem::exists(dir + "/tokenizer.json"))
    GTEST_FAIL() << dir << "/tokenizer.json is missing: run through ctest (the oracle_bpe_tokenizers fixture)";
  const auto tok = qtune::data::Tokenizer::load(dir + "/tokenizer.json");
  auto m = qtune::exporting::gguf_vocab_metadata(dir + "/tokenizer.json", tok, tok.vocab_size());
  bool found = false;
  for (const auto& [key, v] : m.entries())
    if (key == "tokenizer.ggml.pre") {
      EXPECT_EQ(v.value, pre);
      found = true;
    }
  EXPECT_TRUE(found);
  m.set_string("general.architecture", "llama");
  const auto file = qtune::test::temp_dir() + "_" + layout + ".gguf";
  std::filesystem::remove(file);
  qtune::io::GgufWriter(file, m, {}).finish();
  const auto gguf = qtune::data::gguf_tokenizer(*qtune::io::GgufFile::open(file));
  const auto expected = read_json(dir + "/expected.json");
  int checked = 0;
  // What a GGUF vocabulary cannot carry (llama.cpp applies no normalizer, and matches added tokens without their
  // lstrip/rstrip/normalized flags; the export warns about both) is left out of the comparison: texts a normalizer
  // changes, and texts holding an added token with such flags or a non-special one.
  const auto tj = read_json(dir + "/tokenizer.json");
  std::vector<std::string> flagged;
  for (const auto& t : tj.at("added_tokens"))
    if (t.value("lstrip", false) || t.value("rstrip", false) || t.value("normalized", false) || !t.value("special", false))
      flagged.push_back(t.at("content").get<std::string>());
  const bool normalizes = !tj.at("normalizer").is_null();
  const auto& texts = expected.at("texts");
  const auto& cases = expected.at("cases");
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto text = texts[i].get<std::string>();
    if (normalizes && cases[i].at("decode").get<std::string>() != text) continue;
    if (std::any_of(flagged.begin(), flagged.end(), [&](const auto& f) { return text.find(f) != std::string::npos; }))
      continue;
    EXPECT_EQ(gguf.backend->encode(text), cases[i].at("ids").get<std::vector<int64_t>>()) << layout << ": " << text;
    ++checked;
  }
  EXPECT_GT(checked, 150);
  std::filesystem::remove(file);
}

INSTANTIATE_TEST_SUITE_P(Layouts, OracleGgufVocab,
                         // The oracle's SmolLM2 layout is transformers' reading of the GGUF, which leaves out the
                         // digit split of llama.cpp's "smollm": a plain ByteLevel, GPT-2's.
                         ::testing::Values(std::make_pair("smollm2", "gpt-2"), std::make_pair("llama3", "llama-bpe"),
                                           std::make_pair("qwen2", "qwen2"), std::make_pair("gpt2", "gpt-2")),
                         [](const auto& info) { return std::string(info.param.first); });

TEST(OracleGgufVocabRefusal, SentencePieceStyleTokenizerJsonIsRefused) {
  const auto dir = layout_dir("sp_llama2");
  if (!std::filesystem::exists(dir + "/tokenizer.json"))
    GTEST_FAIL() << dir << "/tokenizer.json is missing: run through ctest (the oracle_bpe_tokenizers fixture)";
  const auto tok = qtune::data::Tokenizer::load(dir + "/tokenizer.json");
  const auto e = qtune::test::error_of(
      [&] { qtune::exporting::gguf_vocab_metadata(dir + "/tokenizer.json", tok, tok.vocab_size()); });
  EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
  EXPECT_NE(e.find("pre-tokenizer"), std::string::npos) << e;
}

}  // namespace
