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

}  // namespace
