// Removes each test's temp_dir() when the test ends. Without it every suite run left its checkpoints, exports and
// converted models in /tmp (about 50 GiB after a day of runs), until a CI run failed with a full disk.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "test_util.h"

namespace {

class TempDirCleanup : public ::testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const ::testing::TestInfo& info) override {
    const auto dir = qtune::test::temp_dir_of(info);
    if (!std::filesystem::exists(dir)) return;
    if (std::getenv("QTUNE_KEEP_TEST_DIRS")) {
      std::cerr << "kept " << dir.string() << " (QTUNE_KEEP_TEST_DIRS is set)\n";
      return;
    }
    if (info.result() != nullptr && info.result()->Failed())
      std::cerr << "removed " << dir.string() << "; set QTUNE_KEEP_TEST_DIRS=1 to keep what a failing test wrote\n";
    qtune::remove_tree(dir.string());
  }

  void OnTestProgramEnd(const ::testing::UnitTest&) override {
    const auto base = qtune::test::cli_capture_base().string();
    std::error_code ec;
    std::filesystem::remove(base + ".out", ec);
    std::filesystem::remove(base + ".err", ec);
  }
};

// Registered before main() runs RUN_ALL_TESTS (gtest_main), which is when gtest takes listeners.
const bool kRegistered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new TempDirCleanup);
  return true;
}();

}  // namespace
