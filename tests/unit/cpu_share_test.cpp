// Another qtune on the same cores is found and named: a process called "qtune" (a copy of sleep) stands in for it.
#include "qtune/util/cpu_share.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "test_util.h"

namespace {

TEST(CpuShare, AnotherQtuneProcessIsFoundAndNamedInTheWarning) {
  const auto dir = qtune::test::temp_dir();
  const auto fake = dir + "/qtune";
  std::filesystem::copy_file("/bin/sleep", fake);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl(fake.c_str(), "qtune", "30", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  bool found = false;
  for (int i = 0; i < 100 && !found; ++i) {  // until the child has exec'd
    const auto pids = qtune::other_processes_named("qtune");
    found = std::find(pids.begin(), pids.end(), static_cast<int>(pid)) != pids.end();
    if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(found);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const auto warning = qtune::cpu_oversubscription_warning(cores);
  EXPECT_NE(warning.find(std::to_string(pid)), std::string::npos) << warning;
  EXPECT_NE(warning.find("OMP_NUM_THREADS"), std::string::npos) << warning;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  const auto after = qtune::other_processes_named("qtune");
  EXPECT_EQ(std::find(after.begin(), after.end(), static_cast<int>(pid)), after.end());
}

// A model command starts itself again with its OpenMP wait chosen (util/omp_wait.h); the new image is still named
// qtune, so ps and the warning above find it.
TEST(CpuShare, ARestartedQtuneKeepsItsName) {
  const auto config = std::string(QTUNE_TEST_SOURCE_DIR) + "/configs/models/tiny-llama.json";
  const auto bin = qtune::test::qtune_bin();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::unsetenv("OMP_NUM_THREADS");
    ::unsetenv("GOMP_SPINCOUNT");
    ::unsetenv("OMP_WAIT_POLICY");
    ::unsetenv("QTUNE_OMP_WAIT");
    ::freopen("/dev/null", "w", stdout);
    ::freopen("/dev/null", "w", stderr);
    ::execl(bin.c_str(), "qtune", "bench", "train", "--config", config.c_str(), "--batch", "1", "--seq", "16",
            "--steps", "100000", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  bool restarted = false;
  for (int i = 0; i < 500 && !restarted; ++i) {  // until the second image runs
    restarted = qtune::test::read_file("/proc/" + std::to_string(pid) + "/environ").find("GOMP_SPINCOUNT=1000") !=
                std::string::npos;
    if (!restarted) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(restarted);
  const auto pids = qtune::other_processes_named("qtune");
  EXPECT_NE(std::find(pids.begin(), pids.end(), static_cast<int>(pid)), pids.end())
      << qtune::test::read_file("/proc/" + std::to_string(pid) + "/comm");
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

}  // namespace
