// metrics.jsonl: records round-trip (non-finite values as null), a resumed run rewinds the file to its
// checkpoint's step, and malformed files fail with file:line.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "qtune/train/metrics_log.h"
#include "test_util.h"

namespace {

using namespace qtune;
using train::MetricRecord;
using train::MetricsLog;

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

MetricRecord train_record(int64_t step, double loss) {
  return {"train", step, {{"loss", loss}, {"lr", 2e-4}, {"grad_norm", 0.5}, {"tokens_per_s", 5120.5},
                          {"elapsed_s", 1.25 * step}, {"mem_bytes", 3.5e9}}};
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::vector<int64_t> steps_of(const std::vector<MetricRecord>& records) {
  std::vector<int64_t> steps;
  for (const auto& r : records) steps.push_back(r.step);
  return steps;
}

TEST(MetricsLog, AppendedRecordsReadBackInOrderWithTheirValues) {
  const std::string path = test::temp_dir() + "/run/metrics.jsonl";  // the directory is created
  {
    MetricsLog log(path);
    log.append(train_record(1, 2.5));
    log.append(train_record(2, 0.1 + 0.2));  // not exactly representable: must survive to the last bit
    log.append({"eval", 2, {{"loss", 2.25}, {"perplexity", std::exp(2.25)}}});
    EXPECT_EQ(log.records().size(), 3u);
  }
  const auto records = MetricsLog::read(path);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].kind, "train");
  EXPECT_EQ(records[0].step, 1);
  const auto expected = train_record(1, 2.5).values;
  ASSERT_EQ(records[0].values.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(records[0].values[i].first, expected[i].first);  // file order is kept
    EXPECT_EQ(records[0].values[i].second, expected[i].second);
  }
  EXPECT_EQ(*records[1].value("loss"), 0.1 + 0.2);
  EXPECT_EQ(records[2].kind, "eval");
  EXPECT_EQ(*records[2].value("perplexity"), std::exp(2.25));
  EXPECT_FALSE(records[2].value("lr").has_value());

  // One JSON object per line, "kind" and "step" first: what jq and pandas expect.
  const std::string text = slurp(path);
  EXPECT_EQ(text.rfind("{\"kind\":\"train\",\"step\":1,\"loss\":2.5,\"lr\":0.0002,", 0), 0u) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
}

TEST(MetricsLog, NonFiniteValuesAreWrittenAsNullAndReadBackAsNaN) {
  const std::string path = test::temp_dir() + "/metrics.jsonl";
  MetricsLog log(path);
  log.append({"train", 7, {{"loss", kNaN}, {"grad_norm", kInf}, {"lr", -kInf}, {"tokens_per_s", 10}}});
  const std::string text = slurp(path);
  EXPECT_EQ(text, "{\"kind\":\"train\",\"step\":7,\"loss\":null,\"grad_norm\":null,\"lr\":null,\"tokens_per_s\":10.0}\n");
  for (const auto& records : {MetricsLog::read(path), log.records()}) {
    ASSERT_EQ(records.size(), 1u);
    EXPECT_TRUE(std::isnan(*records[0].value("loss")));
    EXPECT_TRUE(std::isnan(*records[0].value("grad_norm")));
    EXPECT_TRUE(std::isnan(*records[0].value("lr")));
    EXPECT_EQ(*records[0].value("tokens_per_s"), 10.0);
  }
}

TEST(MetricsLog, ReopeningAppendsAndRecordsIncludeWhatWasThere) {
  const std::string path = test::temp_dir() + "/metrics.jsonl";
  { MetricsLog(path).append(train_record(1, 3.0)); }
  MetricsLog log(path);
  EXPECT_EQ(steps_of(log.records()), (std::vector<int64_t>{1}));
  log.append(train_record(2, 2.0));
  EXPECT_EQ(steps_of(log.records()), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(steps_of(MetricsLog::read(path)), (std::vector<int64_t>{1, 2}));
}

TEST(MetricsLog, ResumeDropsTheStepsAfterTheCheckpointSoTheyAreNotLoggedTwice) {
  const std::string path = test::temp_dir() + "/metrics.jsonl";
  {
    MetricsLog log(path);
    for (int64_t s = 1; s <= 6; ++s) log.append(train_record(s, 3.0 - 0.1 * s));
    log.append({"eval", 4, {{"loss", 2.7}}});
    log.append({"eval", 6, {{"loss", 2.5}}});
  }
  {
    MetricsLog log(path, 4);  // the checkpoint was at step 4; the crash happened after step 6
    EXPECT_EQ(steps_of(log.records()), (std::vector<int64_t>{1, 2, 3, 4, 4}));
    EXPECT_EQ(steps_of(MetricsLog::read(path)), (std::vector<int64_t>{1, 2, 3, 4, 4}));
    log.append(train_record(5, 2.55));  // the redone step
  }
  const auto records = MetricsLog::read(path);
  EXPECT_EQ(steps_of(records), (std::vector<int64_t>{1, 2, 3, 4, 4, 5}));
  EXPECT_DOUBLE_EQ(*records.back().value("loss"), 2.55);
  EXPECT_EQ(records[4].kind, "eval");

  MetricsLog from_start(path, 0);  // resuming from nothing keeps nothing
  EXPECT_TRUE(from_start.records().empty());
  EXPECT_EQ(slurp(path), "");
  // The rewrite left no temporary file behind.
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path())) ++files;
  EXPECT_EQ(files, 1u);
}

TEST(MetricsLog, ALastLineCutShortByACrashIsDroppedAndAppendingStartsAFreshLine) {
  const std::string path = test::temp_dir() + "/metrics.jsonl";
  spit(path, "{\"kind\":\"train\",\"step\":1,\"loss\":2.0}\n{\"kind\":\"train\",\"st");
  EXPECT_EQ(steps_of(MetricsLog::read(path)), (std::vector<int64_t>{1}));
  {
    MetricsLog log(path);
    EXPECT_EQ(steps_of(log.records()), (std::vector<int64_t>{1}));
    log.append(train_record(2, 1.5));
  }
  EXPECT_EQ(steps_of(MetricsLog::read(path)), (std::vector<int64_t>{1, 2}));

  // A complete last line without its newline is kept, and the next record does not run into it.
  spit(path, "{\"kind\":\"train\",\"step\":1,\"loss\":2.0}");
  { MetricsLog(path).append(train_record(2, 1.5)); }
  EXPECT_EQ(steps_of(MetricsLog::read(path)), (std::vector<int64_t>{1, 2}));
}

TEST(MetricsLog, BlankLinesAndWindowsLineEndingsAreAccepted) {
  const std::string path = test::temp_dir() + "/metrics.jsonl";
  spit(path, "{\"kind\":\"train\",\"step\":1,\"loss\":2}\r\n\n  \n{\"kind\":\"eval\",\"step\":1,\"loss\":3}\n");
  const auto records = MetricsLog::read(path);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(*records[1].value("loss"), 3.0);
}

TEST(MetricsLog, ReadErrorsNameTheFileAndLine) {
  const std::string dir = test::temp_dir();
  const std::string good = "{\"kind\":\"train\",\"step\":1,\"loss\":2}\n";
  struct Case {
    std::string bad_line, expected;
  };
  const std::vector<Case> cases = {
      {"{\"kind\":\"train\",\"step\":2,\"loss\":}", "not a JSON object"},
      {"[1,2]", "expected a JSON object"},
      {"{\"step\":2,\"loss\":1}", "\"kind\" must be a non-empty string"},
      {"{\"kind\":\"train\",\"loss\":1}", "\"step\" must be an integer, got nothing"},
      {"{\"kind\":\"train\",\"step\":2.5}", "\"step\" must be an integer, got number"},
      {"{\"kind\":\"train\",\"step\":\"2\"}", "\"step\" must be an integer, got string"},
      {"{\"kind\":\"train\",\"step\":2,\"loss\":\"low\"}", "\"loss\" must be a number or null, got string"},
  };
  for (const auto& c : cases) {
    const std::string path = dir + "/metrics.jsonl";
    spit(path, good + "\n" + c.bad_line + "\n" + good);  // the bad record is on line 3
    const std::string msg = test::error_of([&] { MetricsLog::read(path); });
    EXPECT_NE(msg.find(path + ":3: "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expected), std::string::npos) << msg;
    // Opening a bad file for a resumed run fails the same way instead of appending after garbage.
    EXPECT_NE(test::error_of([&] { MetricsLog log(path); }).find(path + ":3: "), std::string::npos);
  }
  const std::string missing = dir + "/nope.jsonl";
  EXPECT_NE(test::error_of([&] { MetricsLog::read(missing); }).find(missing + ": cannot open"), std::string::npos);
}

TEST(MetricsLog, AppendRejectsRecordsThatWouldNotReadBack) {
  MetricsLog log(test::temp_dir() + "/metrics.jsonl");
  EXPECT_NE(test::error_of([&] { log.append({"", 1, {}}); }).find("kind is empty"), std::string::npos);
  EXPECT_NE(test::error_of([&] { log.append({"train", 1, {{"step", 1}}}); }).find("\"step\" is reserved"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { log.append({"train", 1, {{"loss", 1}, {"loss", 2}}}); }).find("given twice"),
            std::string::npos);
  EXPECT_TRUE(log.records().empty());
  EXPECT_TRUE(MetricsLog::read(log.path()).empty());
}

}  // namespace
