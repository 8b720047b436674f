// Progress output: plain lines every log_every steps off a terminal (no \r, nothing in between), a bar redrawn
// in place on a terminal with ETA and memory, messages that do not break the bar, and duration formatting.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "qtune/train/progress.h"
#include "test_util.h"

namespace {

using namespace qtune;
using train::Progress;
using train::ProgressInfo;

// Captures what Progress writes to its FILE*.
class Capture {
 public:
  Capture() : file_(std::tmpfile()) {}
  ~Capture() { std::fclose(file_); }
  std::FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    std::rewind(file_);
    std::string s;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0) s.append(buf, n);
    std::fseek(file_, 0, SEEK_END);
    return s;
  }

 private:
  std::FILE* file_;
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> lines;
  size_t begin = 0;
  for (size_t end; (end = s.find('\n', begin)) != std::string::npos; begin = end + 1) lines.push_back(s.substr(begin, end - begin));
  if (begin < s.size()) lines.push_back(s.substr(begin));
  return lines;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

ProgressInfo at(int64_t step, int64_t total, double elapsed_s) {
  ProgressInfo p;
  p.step = step;
  p.total_steps = total;
  p.loss = 2.0 + 1.0 / static_cast<double>(step);
  p.lr = 2e-4;
  p.tokens_per_s = 5120;
  p.elapsed_s = elapsed_s;
  p.mem_bytes = int64_t(3) << 30;
  p.grad_norm = 0.75;
  return p;
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(Progress::format_duration(0), "0:00");
  EXPECT_EQ(Progress::format_duration(5), "0:05");
  EXPECT_EQ(Progress::format_duration(245), "4:05");
  EXPECT_EQ(Progress::format_duration(59.6), "1:00");  // rounds, so 59.6 s is not shown as 0:59 then 1:00 jumps
  EXPECT_EQ(Progress::format_duration(3599.4), "59:59");
  EXPECT_EQ(Progress::format_duration(3600), "1:00:00");
  EXPECT_EQ(Progress::format_duration(3723), "1:02:03");
  EXPECT_EQ(Progress::format_duration(100 * 3600 + 61), "100:01:01");
  EXPECT_EQ(Progress::format_duration(-1), "--:--");
  EXPECT_EQ(Progress::format_duration(std::numeric_limits<double>::quiet_NaN()), "--:--");
  EXPECT_EQ(Progress::format_duration(std::numeric_limits<double>::infinity()), "--:--");
}

TEST(Progress, FormatBytesAndRates) {
  EXPECT_EQ(Progress::format_bytes(512), "512 B");
  EXPECT_EQ(Progress::format_bytes(int64_t(3) << 30), "3.00 GiB");
  EXPECT_EQ(Progress::format_bytes(int64_t(1536) << 20), "1.50 GiB");
  EXPECT_EQ(Progress::format_bytes(int64_t(200) << 20), "200 MiB");
  EXPECT_EQ(Progress::format_bytes(int64_t(45) << 10), "45.0 KiB");
  EXPECT_EQ(Progress::format_rate(512.4), "512");
  EXPECT_EQ(Progress::format_rate(5120), "5.1k");
  EXPECT_EQ(Progress::format_rate(1.2e6), "1.20M");
}

TEST(Progress, OffATerminalPrintsAPlainLineEveryLogEveryStepsAndTheLast) {
  Capture out;
  {
    Progress progress(out.file(), /*is_terminal=*/false, /*log_every=*/10);
    for (int64_t s = 1; s <= 25; ++s) progress.update(at(s, 25, static_cast<double>(s)));
    progress.finish();
  }
  const std::string text = out.text();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(text.find('\033'), std::string::npos);  // no escape codes in a log file
  const auto lines = lines_of(text);
  ASSERT_EQ(lines.size(), 3u) << text;
  EXPECT_EQ(lines[0].rfind("step 10/25 (40%) | loss 2.1000 | lr 2.000e-04 | grad_norm 0.75 | 5.1k tok/s | mem 3.00 GiB | "
                           "elapsed 0:10 | ETA 0:15",
                           0),
            0u)
      << lines[0];
  EXPECT_EQ(lines[1].rfind("step 20/25 (80%)", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("step 25/25 (100%)", 0), 0u) << lines[2];
  EXPECT_EQ(lines[2].find("ETA"), std::string::npos);  // nothing left to estimate
  EXPECT_EQ(text.back(), '\n');
}

TEST(Progress, OffATerminalMessagesArePlainLinesAndTheLastStepIsNotLoggedTwice) {
  Capture out;
  Progress progress(out.file(), false, 5);
  for (int64_t s = 1; s <= 10; ++s) {
    progress.update(at(s, 10, static_cast<double>(s)));
    if (s == 5) progress.message("eval loss 2.1");
  }
  progress.update(at(10, 10, 10.5));  // the same step reported again
  progress.finish();
  const auto lines = lines_of(out.text());
  ASSERT_EQ(lines.size(), 3u) << out.text();
  EXPECT_EQ(lines[0].rfind("step 5/10", 0), 0u);
  EXPECT_EQ(lines[1], "eval loss 2.1");
  EXPECT_EQ(lines[2].rfind("step 10/10", 0), 0u);
}

TEST(Progress, OnATerminalTheBarIsRedrawnInPlaceWithEtaAndMemory) {
  Capture out;
  Progress progress(out.file(), /*is_terminal=*/true, 1000);
  progress.set_terminal_width(120);
  for (int64_t s = 1; s <= 5; ++s) progress.update(at(s, 7200, static_cast<double>(s)));
  const std::string text = out.text();
  EXPECT_EQ(text.find('\n'), std::string::npos);  // all frames on one line
  EXPECT_EQ(count(text, "\r"), 5u);
  const std::string last = text.substr(text.rfind('\r') + 1);
  EXPECT_NE(last.find("   5/7200"), std::string::npos) << last;
  EXPECT_NE(last.find("loss 2.2000"), std::string::npos) << last;
  EXPECT_NE(last.find("lr 2.00e-04"), std::string::npos) << last;
  EXPECT_NE(last.find("5.1k tok/s"), std::string::npos) << last;
  EXPECT_NE(last.find("3.00 GiB"), std::string::npos) << last;
  EXPECT_NE(last.find("gnorm 0.75"), std::string::npos) << last;
  // 1 s per step measured from the first update, 7195 steps left.
  EXPECT_NE(last.find("ETA 1:59:55"), std::string::npos) << last;
  EXPECT_NE(last.find("|"), std::string::npos);
  // The first frame has no timing yet to estimate from.
  const std::string first = text.substr(1, text.find('\r', 1) - 1);
  EXPECT_NE(first.find("ETA --:--"), std::string::npos) << first;

  progress.finish();
  EXPECT_EQ(out.text().back(), '\n');  // the shell prompt does not land on the bar's line
}

TEST(Progress, OnATerminalRedrawsAreThrottledButTheLastStepIsAlwaysDrawn) {
  Capture out;
  Progress progress(out.file(), true, 1);
  progress.set_terminal_width(100);
  for (int64_t s = 1; s <= 100; ++s) progress.update(at(s, 100, s * 0.01));  // 10 ms steps: 1 s in all
  const std::string text = out.text();
  const size_t frames = count(text, "\r");
  EXPECT_GE(frames, 9u);
  EXPECT_LE(frames, 12u);
  EXPECT_NE(text.substr(text.rfind('\r')).find("100/100"), std::string::npos);
  EXPECT_NE(text.substr(text.rfind('\r')).find("done in 0:01"), std::string::npos);
}

TEST(Progress, TheBarFillsWithTheSteps) {
  Progress progress(stdout, true, 1);
  const auto cells = [](const std::string& line) { return count(line, "█"); };
  // Wide enough that the bar has its full 30 cells in each.
  const std::string half = progress.status_line(at(50, 100, 50), 200);
  const std::string full = progress.status_line(at(100, 100, 100), 200);
  const std::string none = progress.status_line(at(0, 100, 0), 200);
  EXPECT_EQ(cells(none), 0u);
  EXPECT_GT(cells(full), 0u);
  EXPECT_EQ(cells(full), 30u);
  EXPECT_EQ(cells(half), 15u) << half;
}

TEST(Progress, ANarrowTerminalDropsTheLeastUsefulFieldsInsteadOfWrapping) {
  Progress progress(stdout, true, 1);
  const auto p = at(420, 1000, 420);
  for (int width : {40, 60, 80, 200}) {
    const std::string line = progress.status_line(p, width);
    // Display width: each UTF-8 bar cell is one column; count code points.
    size_t columns = 0;
    for (unsigned char c : line) columns += (c & 0xC0) != 0x80;
    EXPECT_LT(columns, static_cast<size_t>(width)) << width << ": " << line;
    EXPECT_NE(line.find("420/1000"), std::string::npos) << line;  // the step is always there
  }
  const std::string narrow = progress.status_line(p, 60);
  EXPECT_NE(narrow.find("loss"), std::string::npos) << narrow;
  EXPECT_EQ(narrow.find("gnorm"), std::string::npos) << narrow;
  EXPECT_NE(progress.status_line(p, 200).find("gnorm"), std::string::npos);
}

TEST(Progress, MessagesClearTheBarPrintAndRedrawIt) {
  Capture out;
  Progress progress(out.file(), true, 1);
  progress.set_terminal_width(100);
  progress.update(at(1, 10, 1));
  progress.message("saved checkpoint step-1");
  const std::string text = out.text();
  const size_t msg = text.find("\r\033[Ksaved checkpoint step-1\n");
  ASSERT_NE(msg, std::string::npos) << text;
  // Redrawn after the message.
  EXPECT_NE(text.find("\r|", msg), std::string::npos) << text;
  progress.finish();
  progress.finish();  // twice is harmless
  progress.message("done");  // after finish: no bar comes back
  const std::string after = out.text();
  EXPECT_EQ(after.substr(after.size() - 5), "done\n");
  EXPECT_EQ(count(after, "\n"), 3u);
}

TEST(Progress, UnknownTotalShowsTheStepWithoutBarOrEta) {
  Progress progress(stdout, true, 1);
  const std::string line = progress.status_line(at(7, 0, 7), 100);
  EXPECT_EQ(line.rfind("step 7", 0), 0u) << line;
  EXPECT_EQ(line.find("ETA"), std::string::npos);
  EXPECT_EQ(line.find("█"), std::string::npos);
}

TEST(Progress, RejectsANonPositiveLogEvery) {
  EXPECT_NE(test::error_of([] { Progress(stdout, false, 0); }).find("log_every must be at least 1, got 0"),
            std::string::npos);
}

}  // namespace
