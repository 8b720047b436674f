#include "qtune/data/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qtune/data/synthetic_corpus.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/atomic_file.h"
#include "test_util.h"

namespace {

using qtune::data::Tokenizer;
using qtune::test::error_of;

std::string stories_dir() { return qtune::test::shared_dir() + "/models/stories260K"; }

TEST(Tokenizer, ByteFallbackEncodesNewlineAsByteToken) {
  QTUNE_REQUIRE_SHARED();
  auto tok = Tokenizer::load(stories_dir());
  auto ids = tok.encode("Lily\nTom", /*add_bos=*/false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 13), ids.end()) << "'\\n' has no piece: it must be byte <0x0A> = 13";
  EXPECT_EQ(tok.piece(13), "<0x0A>");
  EXPECT_EQ(tok.decode(ids), "Lily\nTom");
  // A character outside the 512 pieces still round-trips through its UTF-8 bytes.
  const std::string snow = "snow \xE2\x98\x83 man";
  EXPECT_EQ(tok.decode(tok.encode(snow)), snow);
}

TEST(Tokenizer, SpecialIdsAndFlags) {
  QTUNE_REQUIRE_SHARED();
  auto tok = Tokenizer::load(stories_dir());
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_FALSE(tok.pad_id().has_value());
  auto with = tok.encode("a", true, true);
  EXPECT_EQ(with.front(), 1);
  EXPECT_EQ(with.back(), 2);
  EXPECT_EQ(tok.encode("a", false, false).size() + 2, with.size());
  EXPECT_EQ(tok.decode(with), "a") << "special tokens decode to nothing";
}

TEST(Tokenizer, MissingFileNamesThePath) {
  const auto dir = qtune::test::temp_dir();
  const auto msg = error_of([&] { Tokenizer::load(dir); });
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("no tokenizer.json or tokenizer.model"), std::string::npos) << msg;
  const auto file = error_of([&] { Tokenizer::load(dir + "/tokenizer.model"); });
  EXPECT_NE(file.find(dir + "/tokenizer.model: not found"), std::string::npos) << file;
}

TEST(Tokenizer, CorruptFileIsAnErrorNotACrash) {
  const auto dir = qtune::test::temp_dir();
  qtune::io::write_text_atomically(dir + "/tokenizer.model", "this is not a protobuf \x01\x02\x03");
  const auto msg = error_of([&] { Tokenizer::load(dir); });
  EXPECT_NE(msg.find("tokenizer.model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a valid SentencePiece model"), std::string::npos) << msg;
}

// tiktoken's "<base64 bytes> <rank>" lines, as Qwen's qwen.tiktoken and Meta's original Llama 3 tokenizer.model hold
// them: named as such, whether given as a file, as a tokenizer.model, or as a directory holding only the .tiktoken.
TEST(Tokenizer, ATiktokenRankFileIsNamedForWhatItIs) {
  const auto dir = qtune::test::temp_dir();
  std::string ranks;
  for (int b = 0; b < 256; ++b) {
    static const char* kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    ranks += std::string{kBase64[b >> 2], kBase64[(b & 3) << 4], '=', '='} + " " + std::to_string(b) + "\n";
  }
  ranks += "aGVsbG8= 256\nIHdvcmxk 257\n";  // "hello", " world"
  std::filesystem::create_directories(dir + "/llama3/original");
  std::filesystem::create_directories(dir + "/qwen");
  qtune::io::write_text_atomically(dir + "/llama3/original/tokenizer.model", ranks);
  qtune::io::write_text_atomically(dir + "/qwen/qwen.tiktoken", ranks);
  for (const auto& [given, named] : std::vector<std::pair<std::string, std::string>>{
           {dir + "/llama3/original/tokenizer.model", dir + "/llama3/original/tokenizer.model"},
           {dir + "/llama3/original", dir + "/llama3/original/tokenizer.model"},
           {dir + "/qwen/qwen.tiktoken", dir + "/qwen/qwen.tiktoken"},
           {dir + "/qwen", dir + "/qwen/qwen.tiktoken"}}) {
    SCOPED_TRACE(given);
    const auto msg = error_of([&] { Tokenizer::load(given); });
    EXPECT_NE(msg.find(named + ": this is a tiktoken rank file"), std::string::npos) << msg;
    EXPECT_NE(msg.find("qtune cannot read it"), std::string::npos) << msg;
    EXPECT_NE(msg.find("save_pretrained"), std::string::npos) << msg;
  }
}

TEST(Tokenizer, TrainedBpeTokenizerRoundTrips) {
  const auto dir = qtune::test::temp_dir();
  qtune::io::write_text_atomically(dir + "/corpus.txt", qtune::data::synthetic_corpus(3000, 1));
  qtune::data::train_bpe_tokenizer(dir + "/corpus.txt", dir + "/tok", 400);
  auto tok = Tokenizer::load(dir + "/tok.model");
  EXPECT_EQ(tok.vocab_size(), 400);
  const std::string text = "One day, Lily went to the park. Tom had 3 cats and found 4 more.";
  auto ids = tok.encode(text);
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_LT(ids.size(), text.size() / 2) << "BPE should merge common words";
  EXPECT_EQ(tok.decode(ids), text);
}

TEST(Tokenizer, VocabLargerThanModelIsAnError) {
  QTUNE_REQUIRE_SHARED();
  auto cfg = qtune::io::ModelConfig::load(stories_dir());
  cfg.vocab_size = 100;
  const auto msg = error_of([&] { Tokenizer::load(stories_dir(), &cfg); });
  EXPECT_NE(msg.find("512 tokens"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocab_size is 100"), std::string::npos) << msg;
}

}  // namespace
