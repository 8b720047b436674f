// data/gguf_tokenizer.h against llama.cpp (tests/oracle/gguf_tokenizers.py, the oracle_gguf_tokenizers fixture): GGUF
// vocabularies llama.cpp loads, each tokenized by qtune as llama.cpp tokenizes it —
//  - SentencePiece ones with CONTROL / USER_DEFINED tokens (matched in the text before the model), UNKNOWN-typed
//    padding, an <unk> typed CONTROL, no token types at all;
//  - a byte-level BPE under every tokenizer.ggml.pre qtune reads (regexes, ignore_merges, the BOS llama.cpp adds when
//    the file has no add_bos_token), and without the key;
// the directory `qtune convert` writes for a SentencePiece GGUF tokenizes in transformers as llama.cpp tokenizes the
// file; SentencePiece decoding is transformers' decode, keeping or skipping special tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qtune/data/chat_template.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/data/gguf_tokenizer.h"
#include "qtune/data/records.h"
#include "qtune/data/tokenizer.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/gguf.h"
#include "test_util.h"

namespace {

using json = nlohmann::json;

std::string oracle_path() { return qtune::test::oracle_dir() + "/gguf_tokenizers"; }

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

const json& manifest() {
  static const json m = [] {
    const auto file = oracle_path() + "/manifest.json";
    return std::filesystem::exists(file) ? read_json(file) : json(nullptr);
  }();
  return m;
}

// What llama.cpp said about one of the fixture's files; fails the test when the fixture did not run.
const json* oracle_file(const std::string& name) {
  if (manifest().is_null()) {
    ADD_FAILURE() << oracle_path() << "/manifest.json is missing: run through ctest (the oracle_gguf_tokenizers fixture)";
    return nullptr;
  }
  if (!manifest().contains("files")) {
    ADD_FAILURE() << "the oracle wrote no files: " << manifest().value("skipped", "");
    return nullptr;
  }
  const auto& files = manifest().at("files");
  if (!files.contains(name)) {
    ADD_FAILURE() << "the oracle wrote no " << name;
    return nullptr;
  }
  return &files.at(name);
}

std::string show(const std::vector<int64_t>& ids) {
  std::string s;
  for (auto id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return "[" + s + "]";
}

// Every text of the file: qtune's ids without BOS (special tokens in the text parsed) and with what the vocabulary
// adds, against llama.cpp's.
void expect_llama_cpp_ids(const std::string& name) {
  const auto* o = oracle_file(name);
  if (o == nullptr) return;
  const auto path = o->at("path").get<std::string>();
  const auto gguf = qtune::data::gguf_tokenizer(*qtune::io::GgufFile::open(path));
  const auto tok = qtune::data::Tokenizer::load(path);
  EXPECT_EQ(tok.vocab_size(), o->at("n_vocab").get<int64_t>());
  EXPECT_EQ(tok.bos_id(), o->at("bos").get<int64_t>());
  EXPECT_EQ(tok.eos_id(), o->at("eos").get<int64_t>());
  int wrong = 0, checked = 0;
  for (const auto& t : o->at("texts")) {
    // What qtune leaves to llama.cpp's heuristics, as the oracle found them (the reason is in the manifest).
    if (t.contains("skip")) continue;
    ++checked;
    const auto text = t.at("text").get<std::string>();
    const auto ids = t.at("ids").get<std::vector<int64_t>>();
    const auto with = t.at("ids_with_specials").get<std::vector<int64_t>>();
    const auto got = gguf.backend->encode(text), got_with = tok.encode(text);
    if (got != ids || got_with != with) {
      if (++wrong <= 8)
        ADD_FAILURE() << name << ": " << json(text).dump() << "\n  qtune     " << show(got) << " / " << show(got_with)
                      << "\n  llama.cpp " << show(ids) << " / " << show(with);
    }
  }
  EXPECT_EQ(wrong, 0) << name << ": texts tokenized unlike llama.cpp, of " << checked;
  EXPECT_GE(checked, 80) << name;
  // What `qtune convert` writes as add_bos_token is the BOS llama.cpp adds.
  const auto& first = o->at("texts").at(0).at("ids_with_specials");
  const bool llama_cpp_adds_bos = !first.empty() && first.at(0).get<int64_t>() == o->at("bos").get<int64_t>();
  EXPECT_EQ(gguf.special.add_bos, llama_cpp_adds_bos) << name;
}

class OracleGgufTokenizerFile : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { QTUNE_REQUIRE_SHARED(); }
};

TEST_P(OracleGgufTokenizerFile, TokenizesAsLlamaCpp) { expect_llama_cpp_ids(GetParam()); }

// Instances named Oracle*, as ctest gives the oracle fixture to tests whose full name starts so.
INSTANTIATE_TEST_SUITE_P(
    OracleSentencePiece, OracleGgufTokenizerFile,
    ::testing::Values("sp_chatml", "sp_unknown_pads", "sp_unk_control", "sp_no_types"),
    [](const auto& info) { return std::string(info.param); });

INSTANTIATE_TEST_SUITE_P(
    OracleBytePair, OracleGgufTokenizerFile,
    ::testing::Values("bpe_missing", "bpe_default", "bpe_gpt-2", "bpe_llama-bpe", "bpe_llama3",
                      "bpe_llama-v3", "bpe_smaug-bpe", "bpe_falcon3", "bpe_pixtral", "bpe_qwen2",
                      "bpe_deepseek-r1-qwen", "bpe_tekken", "bpe_smollm", "bpe_starcoder", "bpe_refact",
                      "bpe_codeshell", "bpe_command-r"),
    [](const auto& info) {
      std::string n = info.param;
      for (auto& c : n)
        if (c == '-') c = '_';
      return n;
    });

// The ids of `text` as llama.cpp gave them for the fixture's file `name`.
std::vector<int64_t> llama_cpp_ids(const json& file, const std::string& text) {
  for (const auto& t : file.at("texts"))
    if (t.at("text").get<std::string>() == text) return t.at("ids").get<std::vector<int64_t>>();
  ADD_FAILURE() << "the oracle did not tokenize " << json(text).dump();
  return {};
}

// A ChatML fine-tune shipped as a SentencePiece GGUF: `generate --chat` prompts with the markers as single tokens.
TEST(OracleGgufTokenizer, ChatMLPromptOfASentencePieceGgufIsLlamaCppsTokens) {
  QTUNE_REQUIRE_SHARED();
  const auto* o = oracle_file("sp_chatml");
  if (o == nullptr) return;
  const auto path = o->at("path").get<std::string>();
  const auto tok = qtune::data::Tokenizer::load(path);
  const auto format = qtune::data::resolve_chat_format("chatml", path, tok);
  EXPECT_TRUE(format.markers_are_tokens);
  qtune::data::Record r;
  r.source = "test";
  r.messages.push_back({"user", "What is the capital of France?"});
  const auto text = qtune::data::render_text(r, format, /*for_generation=*/true);
  const auto prompt = qtune::data::prompt_ids(r, format, tok);
  EXPECT_EQ(prompt, llama_cpp_ids(*o, text)) << json(text).dump();
  EXPECT_EQ(std::count(prompt.begin(), prompt.end(), *tok.token_id("<|im_start|>")), 2);
}

// `qtune convert`'s tokenizer files for a SentencePiece GGUF: transformers tokenizes text around special tokens as
// llama.cpp tokenizes it on the source file. Left out: texts where a stretch (the start, or what follows a special
// token) starts with a space, to which transformers' Metaspace adds no "▁" where llama.cpp does (README, the
// documented difference of tests/oracle/gguf_models.py).
TEST(OracleGgufTokenizer, ConvertedSentencePieceTokenizerIsLlamaCppsInTransformers) {
  QTUNE_REQUIRE_SHARED();
  const auto* o = oracle_file("sp_chatml");
  if (o == nullptr) return;
  const auto dir = qtune::test::temp_dir();
  const auto gguf = qtune::data::gguf_tokenizer(*qtune::io::GgufFile::open(o->at("path").get<std::string>()));
  qtune::data::save_tokenizer_files(gguf, dir);
  json texts = json::array();
  for (const auto& t : o->at("texts")) texts.push_back(t.at("text"));
  qtune::io::write_text_atomically(dir + "/texts.json", texts.dump());
  const std::string cmd = std::string(QTUNE_TEST_PYTHON) + " " + QTUNE_TEST_SOURCE_DIR +
                          "/tests/oracle/gguf_tokenizers.py --hf-tokenize " + dir + " " + dir + "/texts.json " + dir +
                          "/hf.json 2>" + dir + "/hf.err";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << qtune::test::read_file(dir + "/hf.err");
  const auto hf = read_json(dir + "/hf.json");
  ASSERT_EQ(hf.size(), o->at("texts").size());
  int wrong = 0, checked = 0;
  for (size_t i = 0; i < hf.size(); ++i) {
    const auto& want = o->at("texts")[i];
    if (want.at("stretch_starts_with_space").get<bool>()) continue;
    ++checked;
    if (hf[i].at("ids") != want.at("ids") || hf[i].at("ids_with_specials") != want.at("ids_with_specials")) {
      if (++wrong <= 8)
        ADD_FAILURE() << json(want.at("text")).dump() << "\n  transformers " << hf[i].at("ids").dump() << " / "
                      << hf[i].at("ids_with_specials").dump() << "\n  llama.cpp    " << want.at("ids").dump() << " / "
                      << want.at("ids_with_specials").dump();
    }
  }
  EXPECT_EQ(wrong, 0) << "of " << checked;
  EXPECT_GE(checked, 70);
}

// decode(ids, skip_special) of the SentencePiece backend, from stories260K's tokenizer.model and from its GGUF, is
// transformers' decode: <unk> is a special token ("<unk>" kept, nothing skipped), never SentencePiece's " ⁇ ".
TEST(OracleGgufTokenizer, SentencePieceDecodeIsTransformers) {
  QTUNE_REQUIRE_SHARED();
  if (manifest().is_null()) GTEST_FAIL() << oracle_path() << "/manifest.json is missing: run through ctest";
  if (!manifest().contains("decode")) GTEST_FAIL() << "the oracle wrote no decode cases: " << manifest().value("skipped", "");
  const auto& d = manifest().at("decode");
  for (const auto& source : {d.at("model").get<std::string>(), qtune::test::shared_dir() + "/originals/stories260K.gguf"}) {
    const auto tok = qtune::data::Tokenizer::load(source);
    for (const auto& c : d.at("cases")) {
      const auto ids = c.at("ids").get<std::vector<int64_t>>();
      EXPECT_EQ(tok.backend().decode(ids, false), c.at("keep").get<std::string>()) << source << " " << show(ids);
      EXPECT_EQ(tok.backend().decode(ids, true), c.at("skip").get<std::string>()) << source << " " << show(ids);
    }
  }
}

}  // namespace
