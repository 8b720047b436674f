// Preference data (data/preference.h): TRL's record formats read from their keys, the implicit prompt, the rows a
// pair trains on, what bad input says, and the loader keeping each pair's two rows together.
#include <gtest/gtest.h>

#include <filesystem>

#include "qtune/data/collate.h"
#include "qtune/data/demo_task.h"
#include "qtune/data/preference.h"
#include "qtune/io/atomic_file.h"
#include "test_util.h"

namespace {

using namespace qtune;
using namespace qtune::data;

std::string write(const std::string& text) {
  const auto path = test::temp_dir() + "/pairs.jsonl";
  io::write_text_atomically(path, text);
  return path;
}

TEST(PreferenceData, ReadsExplicitAndImplicitPromptsAsStringsAndMessages) {
  const auto path = write(
      R"({"prompt": "Q: sky?", "chosen": " Blue.", "rejected": " Green."})"
      "\n\n"
      R"({"chosen": "Q: sun? In the east.", "rejected": "Q: sun? In the west."})"
      "\n"
      R"({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],)"
      R"( "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]})"
      "\n"
      R"({"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],)"
      R"( "rejected": [{"role": "assistant", "content": "5"}]})"
      "\n");
  const auto r = read_preference_records(path);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_FALSE(r[0].conversational);
  EXPECT_EQ(r[0].prompt, "Q: sky?");
  EXPECT_EQ(r[0].source, path + ":1");
  // TRL's extract_prompt: the common prefix, less the space before the answers differ.
  EXPECT_EQ(r[1].prompt, "Q: sun? In the");
  EXPECT_EQ(r[1].chosen, " east.");
  EXPECT_EQ(r[1].rejected, " west.");
  EXPECT_EQ(r[1].source, path + ":3");
  ASSERT_TRUE(r[2].conversational);
  ASSERT_EQ(r[2].prompt_messages.size(), 1u);
  EXPECT_EQ(r[2].prompt_messages[0].content, "Hi");
  ASSERT_EQ(r[2].chosen_messages.size(), 1u);
  EXPECT_EQ(r[2].rejected_messages[0].content, "Go away.");
  EXPECT_EQ(r[3].prompt_messages[0].content, "2+2?");
}

TEST(PreferenceData, BadRecordsNameTheFileLineAndKey) {
  auto error = [](const std::string& line) { return test::error_of([&] { read_preference_records(write(line)); }); };
  const auto file = test::temp_dir() + "/pairs.jsonl";
  auto same = error(R"({"prompt": "Q", "chosen": " A", "rejected": " A"})");
  EXPECT_NE(same.find(file + ":1"), std::string::npos) << same;
  EXPECT_NE(same.find("\"chosen\" equals \"rejected\""), std::string::npos) << same;
  auto missing = error(R"({"prompt": "Q", "chosen": " A"})");
  EXPECT_NE(missing.find("missing \"rejected\""), std::string::npos) << missing;
  auto empty = error(R"({"prompt": "Q", "chosen": "", "rejected": " B"})");
  EXPECT_NE(empty.find("\"chosen\" has no completion"), std::string::npos) << empty;
  auto implicit_same = error(R"({"chosen": "Q A", "rejected": "Q A"})");
  EXPECT_NE(implicit_same.find("no completion"), std::string::npos) << implicit_same;
  auto mixed = error(R"({"prompt": "Q", "chosen": [{"role": "assistant", "content": "A"}], "rejected": " B"})");
  EXPECT_NE(mixed.find("\"prompt\""), std::string::npos) << mixed;
  auto role = error(R"({"chosen": [{"role": "bot", "content": "A"}], "rejected": [{"role": "bot", "content": "B"}]})");
  EXPECT_NE(role.find("unknown role 'bot'"), std::string::npos) << role;
}

// The pair's rows: prompt + completion, the prompt not trained; cut to max_length from the end or the start.
TEST(PreferenceData, RowsMaskThePromptAndTruncateAsTrlsCollator) {
  PreferencePair p{{1, 2, 3}, {4, 5}, {6}, "x:1"};
  auto [chosen, rejected] = preference_rows(p, {});
  EXPECT_EQ(chosen.input_ids, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(chosen.labels, (std::vector<int64_t>{-100, -100, -100, 4, 5}));
  EXPECT_EQ(rejected.labels, (std::vector<int64_t>{-100, -100, -100, 6}));
  auto [start, _] = preference_rows(p, {0, 4, false});
  EXPECT_EQ(start.input_ids, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(start.truncated);
  auto [end, __] = preference_rows(p, {0, 4, true});
  EXPECT_EQ(end.input_ids, (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(end.labels, (std::vector<int64_t>{-100, -100, 4, 5}));
}

TEST(PreferenceData, PromptAsLongAsMaxLengthIsAnErrorNamingTheLine) {
  const auto dir = test::temp_dir();
  io::write_text_atomically(dir + "/corpus.txt", demo_pretrain_corpus(100, 1));
  train_bpe_tokenizer(dir + "/corpus.txt", dir + "/tok", 400);
  const auto tok = Tokenizer::load(dir + "/tok.model");
  const auto records = read_preference_records(
      write(R"({"prompt": "Once upon a time there was a little girl", "chosen": " who ran.", "rejected": " who sat."})"
            "\n"));
  const auto p = tokenize_preference(records[0], ChatTemplate::None, tok, {});
  ASSERT_GT(p.prompt.size(), 4u);
  EXPECT_EQ(p.chosen.back(), tok.eos_id());  // TRL appends EOS to plain completions
  const auto msg = test::error_of(
      [&] { tokenize_preference(records[0], ChatTemplate::None, tok, {0, static_cast<int64_t>(p.prompt.size()), false}); });
  EXPECT_NE(msg.find(records[0].source), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.max_seq_len"), std::string::npos) << msg;
  // max_prompt_length keeps the prompt's end; keep_end truncation keeps the pair.
  const auto short_prompt = tokenize_preference(records[0], ChatTemplate::None, tok, {3, 0, false});
  EXPECT_EQ(short_prompt.prompt, std::vector<int64_t>(p.prompt.end() - 3, p.prompt.end()));
  EXPECT_NO_THROW(
      tokenize_preference(records[0], ChatTemplate::None, tok, {0, static_cast<int64_t>(p.prompt.size()), true}));
}

// Pairs stay together: rows 2i and 2i+1 of a batch are one pair's chosen and rejected, batch_size counts pairs, and
// shuffling moves whole pairs.
TEST(PreferenceData, LoaderKeepsEachPairsRowsAdjacent) {
  std::vector<TokenizedSample> rows;
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t side = 0; side < 2; ++side) {
      TokenizedSample s;
      s.input_ids = {100 + i, 10 * side + 1, 10 * side + 2};
      s.labels = {kIgnoreLabel, 10 * side + 1, 10 * side + 2};
      rows.push_back(s);
    }
  LoaderOptions o;
  o.batch_size = 2;
  o.rows_per_sample = 2;
  o.packing = true;  // ignored: pairs are never packed
  DataLoader loader(rows, o, 0);
  EXPECT_EQ(loader.rows_per_epoch(0), 5);
  EXPECT_EQ(loader.batches_per_epoch(0), 3);
  std::vector<int64_t> seen;
  for (int64_t b = 0; b < 3; ++b) {
    const auto batch = loader.batch(0, b);
    const int64_t n = batch.input_ids.size(0);
    EXPECT_EQ(n, b < 2 ? 4 : 2);
    EXPECT_EQ(batch.samples, n);
    for (int64_t r = 0; r < n; r += 2) {
      EXPECT_EQ(batch.input_ids[r][0].item<int64_t>(), batch.input_ids[r + 1][0].item<int64_t>());
      EXPECT_EQ(batch.input_ids[r][1].item<int64_t>(), 1);
      EXPECT_EQ(batch.input_ids[r + 1][1].item<int64_t>(), 11);
      seen.push_back(batch.input_ids[r][0].item<int64_t>());
    }
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<int64_t>{100, 101, 102, 103, 104}));
  // A rank's share of a global micro-batch is whole pairs.
  const auto share = slice_rows(loader.batch(0, 0), 2, 4);
  EXPECT_EQ(share.input_ids[0][0].item<int64_t>(), share.input_ids[1][0].item<int64_t>());
}

}  // namespace
