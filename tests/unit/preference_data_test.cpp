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

// KTO's unpaired records: prompt, completion and a boolean label, as strings or messages.
TEST(PreferenceData, ReadsKtoRecordsPlainAndConversational) {
  const auto path = write(
      R"({"prompt": "Q: sky?", "completion": " Blue.", "label": true})"
      "\n\n"
      R"({"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "5"}],)"
      R"( "label": false})"
      "\n");
  const auto r = read_kto_records(path);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_FALSE(r[0].conversational);
  EXPECT_TRUE(r[0].desirable);
  EXPECT_EQ(r[0].completion, " Blue.");
  EXPECT_EQ(r[0].source, path + ":1");
  ASSERT_TRUE(r[1].conversational);
  EXPECT_FALSE(r[1].desirable);
  EXPECT_EQ(r[1].completion_messages[0].content, "5");
  EXPECT_EQ(r[1].source, path + ":3");
}

TEST(PreferenceData, BadKtoRecordsNameTheFileLineAndKey) {
  const auto file = test::temp_dir() + "/pairs.jsonl";
  const std::string other = R"({"prompt": "Q", "completion": " B", "label": false})"
                            "\n";
  auto error = [&](const std::string& line) {
    return test::error_of([&] { read_kto_records(write(other + line + "\n")); });
  };
  auto missing = error(R"({"prompt": "Q", "label": true})");
  EXPECT_NE(missing.find(file + ":2"), std::string::npos) << missing;
  EXPECT_NE(missing.find("no completion"), std::string::npos) << missing;
  auto empty = error(R"({"prompt": "Q", "completion": "", "label": true})");
  EXPECT_NE(empty.find(file + ":2"), std::string::npos) << empty;
  EXPECT_NE(empty.find("no completion"), std::string::npos) << empty;
  auto label = error(R"({"prompt": "Q", "completion": " A", "label": "yes"})");
  EXPECT_NE(label.find("\"label\" must be true"), std::string::npos) << label;
  auto pair = error(R"({"prompt": "Q", "chosen": " A", "rejected": " B"})");
  EXPECT_NE(pair.find(file + ":2"), std::string::npos) << pair;
  EXPECT_NE(pair.find("a preference pair"), std::string::npos) << pair;
  // One label only: the file is named (no line is at fault).
  const auto one = test::error_of([&] {
    read_kto_records(write(R"({"prompt": "Q", "completion": " A", "label": true})"
                           "\n"
                           R"({"prompt": "R", "completion": " B", "label": true})"
                           "\n"));
  });
  EXPECT_NE(one.find(file + ": every one of its 2 KTO records has \"label\": true"), std::string::npos) << one;
  // KTO records given to a pairwise objective say which objective reads them.
  const auto as_pairs = test::error_of([&] { read_preference_records(write(other)); });
  EXPECT_NE(as_pairs.find("set train.objective: kto"), std::string::npos) << as_pairs;
}

// A file of pairs given to KTO is unpaired as TRL's KTOTrainer does: the chosen of every pair, then the rejected.
TEST(PreferenceData, KtoUnpairsAFileOfPairsInTrlsOrder) {
  const auto r = read_kto_records(write(R"({"prompt": "Q", "chosen": " A", "rejected": " B"})"
                                        "\n"
                                        R"({"chosen": "R: C", "rejected": "R: D"})"
                                        "\n"));
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].completion, " A");
  EXPECT_TRUE(r[0].desirable);
  EXPECT_EQ(r[1].prompt, "R:");
  EXPECT_EQ(r[1].completion, " C");
  EXPECT_EQ(r[2].completion, " B");
  EXPECT_FALSE(r[2].desirable);
  EXPECT_EQ(r[3].completion, " D");
  EXPECT_EQ(r[3].source, test::temp_dir() + "/pairs.jsonl:2");
}

// The KL term's pairs as TRL builds them: row i's prompt with row i-1's completion (the first with the last's), and
// the loader carrying each row's label and those pairs, sliced with the rows.
TEST(PreferenceData, KtoMismatchedPairsRotateCompletionsWithinTheBatch) {
  std::vector<TokenizedSample> rows;
  for (int64_t i = 0; i < 3; ++i)
    rows.push_back(kto_row({{100 + i, 110 + i}, {20 + i, 30 + i}, i != 1, "x"}, {}));
  EXPECT_EQ(rows[0].labels, (std::vector<int64_t>{-100, -100, 20, 30}));
  EXPECT_EQ(rows[1].desirable, 0);
  const auto kl = mismatched_rows({&rows[0], &rows[1], &rows[2]}, 0);
  EXPECT_EQ(kl[0].input_ids, (std::vector<int64_t>{100, 110, 22, 32}));
  EXPECT_EQ(kl[1].input_ids, (std::vector<int64_t>{101, 111, 20, 30}));
  EXPECT_EQ(kl[1].labels, (std::vector<int64_t>{-100, -100, 20, 30}));
  EXPECT_EQ(mismatched_rows({&rows[0], &rows[1]}, 3)[0].input_ids, (std::vector<int64_t>{100, 110, 21}));

  LoaderOptions o;
  o.batch_size = 3;
  o.shuffle = false;
  DataLoader loader(rows, o, 0);
  const auto b = loader.batch(0, 0);
  ASSERT_TRUE(b.desirable.defined());
  ASSERT_TRUE(b.mismatched);
  EXPECT_TRUE(at::equal(b.desirable, at::tensor({1, 0, 1}, at::kLong).to(at::kBool)));
  EXPECT_EQ(b.mismatched->input_ids[1][2].item<int64_t>(), 20);
  EXPECT_EQ(b.mismatched->samples, 3);
  const auto share = slice_rows(b, 1, 3);  // a rank's share keeps the global batch's pairs
  EXPECT_EQ(share.mismatched->samples, 2);
  EXPECT_EQ(share.mismatched->input_ids[0][2].item<int64_t>(), 20);
  EXPECT_FALSE(share.desirable[0].item<bool>());
}

}  // namespace
