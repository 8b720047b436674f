// Data-parallel training over c10d's Gloo on 127.0.0.1: N ranks x micro-batch b compute what one rank computes with
// N·b rows (fp32, within the tolerance of another summation order: see kAdapterTolerance), a killed rank stops the
// others with a message naming it and the run resumes to the uninterrupted result, torchrun launches the same run.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "background_qtune.h"
#include "qtune/dist/local_launch.h"
#include "qtune/io/safetensors.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {
namespace fs = std::filesystem;

// After several AdamW steps the ranks' adapters differ from one rank's by reduction order alone: Adam's update is
// about lr per element whatever the gradient's size, so rounding differences of ~1e-7 in a gradient move an element
// by up to ~1e-5 after a few steps (measured: 7e-6 at lr 2e-3, 6 steps). A real difference in data, masks or
// weighting moves the adapters by ~lr per step (1e-2 here): 100x above the bound.
constexpr double kAdapterTolerance = 1e-4;
constexpr double kLossTolerance = 1e-5;  // relative

std::string write_recipe(const TinyRun& t, const std::string& name, const std::vector<std::string>& overrides) {
  auto o = overrides;
  o.push_back("train.output_dir=" + t.dir + "/" + name);
  const auto path = t.dir + "/" + name + ".yaml";
  io::write_text_atomically(path, t.recipe(o).to_yaml());
  return path;
}

std::vector<double> train_losses(const std::string& run_dir) {
  std::vector<double> out;
  std::istringstream in(test::read_file(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("kind") == "train") out.push_back(j.at("loss").get<double>());
  }
  return out;
}

double adapter_difference(const std::string& a_dir, const std::string& b_dir) {
  auto a = io::SafetensorsFile::open(a_dir + "/adapter_model.safetensors");
  auto b = io::SafetensorsFile::open(b_dir + "/adapter_model.safetensors");
  EXPECT_EQ(a->tensors().size(), b->tensors().size());
  double worst = 0;
  for (const auto& info : a->tensors())
    worst = std::max(worst, (a->tensor(info.name) - b->tensor(info.name)).abs().max().item<double>());
  return worst;
}

void expect_same_run(const std::string& one, const std::string& many) {
  const auto l1 = train_losses(one), ln = train_losses(many);
  ASSERT_EQ(l1.size(), ln.size());
  ASSERT_FALSE(l1.empty());
  for (size_t i = 0; i < l1.size(); ++i) EXPECT_NEAR(ln[i], l1[i], kLossTolerance * std::abs(l1[i])) << "log line " << i;
  EXPECT_LT(adapter_difference(one + "/adapter", many + "/adapter"), kAdapterTolerance);
}

const std::vector<std::string> kSettings = {"lora.dropout=0.1", "train.grad_accum=2", "train.max_steps=6",
                                            "train.max_grad_norm=0.5", "data.packing=true", "optim.lr=2e-3",
                                            "train.log_every=1"};

TEST(DataParallel, TwoRanksEqualOneRankWithTwiceTheRows) {
  TinyRun t;
  auto two = kSettings;
  two.push_back("train.batch_size=4");
  const auto recipe = write_recipe(t, "two", two);
  const auto r = test::run_qtune("train " + recipe + " --nproc 2");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("data parallel: 2 ranks (qtune --nproc)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rank 1 "), std::string::npos) << r.out;  // every rank's throughput in rank 0's log

  auto one = kSettings;
  one.push_back("train.batch_size=8");
  one.push_back("train.output_dir=" + t.dir + "/one");
  run_training(t.recipe(one), quiet());
  expect_same_run(t.dir + "/one", t.dir + "/two");
  // Rank 0 alone wrote: one metrics line per step, one checkpoint line.
  EXPECT_EQ(train_losses(t.dir + "/two").size(), 6u);
  EXPECT_TRUE(fs::exists(t.dir + "/two/checkpoints/step-00000006/adapter_model.safetensors"));

  // The same run with the micro-batch halved on one rank is another run: the bound above is far below that.
  auto half = kSettings;
  half.push_back("train.batch_size=4");
  half.push_back("train.output_dir=" + t.dir + "/half");
  run_training(t.recipe(half), quiet());
  EXPECT_GT(adapter_difference(t.dir + "/one/adapter", t.dir + "/half/adapter"), 100 * kAdapterTolerance);
}

TEST(DataParallel, ThreeRanksOnUnevenData) {
  TinyRun t;
  // 240 samples in micro-batches of 3 x 7 = 21 rows: the epoch's last one holds 9 (7, 2 and none for the ranks); the
  // 24 eval samples are one batch of 21 and one of 3.
  const std::vector<std::string> settings = {"lora.dropout=0.1", "train.grad_accum=2", "train.max_steps=0",
                                             "train.epochs=1", "data.packing=false", "train.log_every=1"};
  auto three = settings;
  three.push_back("train.batch_size=7");
  const auto r = test::run_qtune("train " + write_recipe(t, "three", three) + " --nproc 3");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto one = settings;
  one.push_back("train.batch_size=21");
  one.push_back("train.output_dir=" + t.dir + "/one");
  const auto s = run_training(t.recipe(one), quiet());
  EXPECT_EQ(s.steps, 6);
  expect_same_run(t.dir + "/one", t.dir + "/three");
  EXPECT_NE(r.out.find(fmt::format("eval loss {:.4f} -> {:.4f}", s.eval_before->loss, s.eval_after->loss)),
            std::string::npos)
      << r.out;
}

// Issue 36 #29: train.eval_batches counted global batches, so 2 ranks scored twice the samples of 1 (263 tokens
// against 422). It counts batches of train.batch_size rows: every world size scores the same samples.
TEST(DataParallel, EvalBatchesScoreTheSameSamplesOnAnyNumberOfRanks) {
  TinyRun t;
  const std::vector<std::string> settings = {"train.batch_size=2", "train.max_steps=1", "train.eval_batches=3",
                                             "data.packing=false", "lora.dropout=0"};
  ASSERT_EQ(test::run_qtune("train " + write_recipe(t, "two", settings) + " --nproc 2").code, 0);
  auto one = settings;
  one.push_back("train.output_dir=" + t.dir + "/one");
  run_training(t.recipe(one), quiet());
  auto evals = [](const std::string& dir) {
    std::vector<std::pair<double, double>> out;  // (loss, tokens)
    std::istringstream in(test::read_file(dir + "/metrics.jsonl"));
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.at("kind") == "eval") out.emplace_back(j.at("loss").get<double>(), j.at("tokens").get<double>());
    }
    return out;
  };
  const auto e1 = evals(t.dir + "/one"), e2 = evals(t.dir + "/two");
  ASSERT_EQ(e1.size(), 2u);
  ASSERT_EQ(e2.size(), 2u);
  EXPECT_EQ(e2[0].second, e1[0].second);  // the same tokens: the same samples (3 batches of 2 rows)
  EXPECT_NEAR(e2[0].first, e1[0].first, kLossTolerance * e1[0].first);
}

// Sends `signal` to rank 1 of a `--nproc 2` run once `checkpoint` exists; then waits for the launcher to end.
struct SignalledRun {
  pid_t victim = -1;
  std::optional<int> code;  // the launcher's exit status
  double seconds = 0;       // from the signal to the launcher's end
  std::string err;
};
SignalledRun signal_rank_one(const std::string& recipe, const TinyRun& t, const std::string& checkpoint, int signal) {
  SignalledRun s;
  test::BackgroundQtune launcher("train " + recipe + " --nproc 2", t.dir);
  if (!test::wait_for_path(checkpoint, std::chrono::seconds(240))) return s;
  s.victim = test::child_with_env(launcher.pid, "RANK=1");
  if (s.victim <= 0 || ::kill(s.victim, signal) != 0) return s;
  const auto at = std::chrono::steady_clock::now();
  s.code = launcher.wait(std::chrono::seconds(60));
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - at).count();
  s.err = test::read_file(launcher.err);
  return s;
}

TEST(DataParallel, KilledRankStopsTheOtherAndResumeEndsWithTheUninterruptedAdapter) {
  TinyRun t;
  const std::vector<std::string> settings = {"lora.dropout=0.1", "train.batch_size=2", "train.max_steps=150",
                                             "train.save_every=10", "train.keep_last=3", "train.dist_timeout_s=20",
                                             "train.log_every=50"};
  const auto recipe = write_recipe(t, "run", settings);
  const auto reference = write_recipe(t, "reference", settings);
  ASSERT_EQ(test::run_qtune("train " + reference + " --nproc 2").code, 0);

  const auto k = signal_rank_one(recipe, t, t.dir + "/run/checkpoints/step-00000020", SIGKILL);
  ASSERT_GT(k.victim, 0);
  ASSERT_TRUE(k.code.has_value()) << "the surviving rank did not stop";
  EXPECT_NE(*k.code, 0);
  EXPECT_LT(k.seconds, 20 + 15);  // within train.dist_timeout_s (and the launcher's look)
  const auto& err = k.err;
  EXPECT_NE(err.find("rank 1 (pid " + std::to_string(k.victim) + ") was killed by signal 9"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 0 of 2: "), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1 stopped answering"), std::string::npos) << err;
  // It names the checkpoint a resume continues from (issue 36 #31: it called a checkpoint intact where none existed).
  EXPECT_TRUE(std::regex_search(err, std::regex("the last checkpoint, " + t.dir + "/run/checkpoints/step-000000[0-9]0 "
                                                "\\(step [0-9]+0\\), is intact: fix the cause and resume with --resume auto")))
      << err;
  EXPECT_FALSE(fs::exists(t.dir + "/run/adapter"));

  const auto resumed = test::run_qtune("train " + recipe + " --nproc 2 --resume auto");
  ASSERT_EQ(resumed.code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from"), std::string::npos) << resumed.out;
  // The same ranks, the same order of every sum: the resumed run ends where the uninterrupted one did, bit for bit.
  EXPECT_EQ(test::read_file(t.dir + "/run/adapter/adapter_model.safetensors"),
            test::read_file(t.dir + "/reference/adapter/adapter_model.safetensors"));
}

// A rank that hangs (stopped, its connections open) fails the others' collective after train.dist_timeout_s; they name
// it, and the launcher stops it after its grace.
TEST(DataParallel, AHungRankIsNamedAfterTheTimeout) {
  TinyRun t;
  const auto recipe = write_recipe(t, "run", {"train.batch_size=2", "train.max_steps=400", "train.save_every=10",
                                              "train.dist_timeout_s=4", "train.log_every=100"});
  const auto h = signal_rank_one(recipe, t, t.dir + "/run/checkpoints/step-00000010", SIGSTOP);
  ASSERT_GT(h.victim, 0);
  ASSERT_TRUE(h.code.has_value());
  EXPECT_NE(*h.code, 0);
  EXPECT_LT(h.seconds, 4 + 3 + 10 + 10);  // the timeout, the naming, the launcher's grace, slack for a loaded machine
  const auto& err = h.err;
  EXPECT_NE(err.find("rank 1 stopped answering"), std::string::npos) << err;
  EXPECT_NE(err.find("(timeout 4 s, train.dist_timeout_s)"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1 (pid " + std::to_string(h.victim) + ") did not stop within 10 s; killing it"),
            std::string::npos)
      << err;
}

TEST(DataParallel, ResumeWithAnotherWorldSizeContinuesFromTheSameSample) {
  TinyRun t;
  // 4 rows per step whatever the ranks: 2 ranks x 2 rows x grad_accum 1, then 1 rank x 2 rows x grad_accum 2.
  const std::vector<std::string> settings = {"train.batch_size=2", "train.global_batch_size=4", "train.max_steps=8",
                                             "train.save_every=4", "train.log_every=1"};
  const auto recipe = write_recipe(t, "run", settings);
  ASSERT_EQ(test::run_qtune("train " + recipe + " --nproc 2 train.max_steps=4").code, 0);
  // Without train.global_batch_size one rank would train 2 rows per step: another run, refused.
  auto r = test::run_qtune("train " + recipe + " --resume auto train.global_batch_size=0 train.grad_accum=1 --force");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("saved by 2 rank(s) with 4 rows per step; 1 rank(s) would train 2 per step"), std::string::npos)
      << r.err;
  r = test::run_qtune("train " + recipe + " --resume auto --force");  // --force: the first part stopped at max_steps 4
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("(saved by 2 rank(s), continued by 1 from the same sample)"), std::string::npos) << r.out;
  const auto state = nlohmann::json::parse(test::read_file(t.dir + "/run/checkpoints/step-00000008/trainer_state.json"));
  EXPECT_EQ(state.at("world_size"), 1);
  // Micro-batch 4 of 4 rows is micro-batch 8 of 2 rows; 4 more steps of 2 micro-batches each.
  EXPECT_EQ(state.at("index"), 8 + 8);
  // The same samples as a run that stayed on 2 ranks: the same target tokens trained.
  ASSERT_EQ(test::run_qtune("train " + write_recipe(t, "straight", settings) + " --nproc 2").code, 0);
  const auto straight =
      nlohmann::json::parse(test::read_file(t.dir + "/straight/checkpoints/step-00000008/trainer_state.json"));
  EXPECT_EQ(state.at("tokens_seen"), straight.at("tokens_seen"));
  EXPECT_EQ(state.at("index") , straight.at("index").get<int64_t>() * 2);
}

// Under a launcher a world of one still forms its group and all-reduces (a copy): the run is the one without it, byte
// for byte. GpuTrain.NcclWorldOfOneTrainsAsAlone is the same on CUDA through NCCL.
TEST(DataParallel, ALaunchersWorldOfOneTrainsAsAlone) {
  TinyRun t;
  const auto r = test::run_qtune("train " + write_recipe(t, "launched", kSettings),
                                 "RANK=0 WORLD_SIZE=1 MASTER_PORT=" + std::to_string(dist::free_local_port()));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("data parallel: 1 ranks (torchrun)"), std::string::npos) << r.out;
  auto alone = kSettings;
  alone.push_back("train.output_dir=" + t.dir + "/alone");
  run_training(t.recipe(alone), quiet());
  EXPECT_EQ(test::read_file(t.dir + "/launched/adapter/adapter_model.safetensors"),
            test::read_file(t.dir + "/alone/adapter/adapter_model.safetensors"));
}

TEST(DataParallel, TorchrunLaunchesTheSameRun) {
  const std::string torchrun = std::string(QTUNE_TEST_SOURCE_DIR) + "/.venv/bin/torchrun";
  if (!fs::exists(torchrun)) GTEST_SKIP() << "no torchrun in .venv (scripts/setup.sh installs torch there)";
  TinyRun t;
  auto two = kSettings;
  two.push_back("train.batch_size=4");
  ASSERT_EQ(test::run_qtune("train " + write_recipe(t, "ours", two) + " --nproc 2").code, 0);
  const auto recipe = write_recipe(t, "torchrun", two);
  const auto cmd = torchrun + " --standalone --nproc-per-node 2 --no-python " + test::qtune_bin() + " train " + recipe +
                   " >" + t.dir + "/torchrun.out 2>" + t.dir + "/torchrun.err";
  const int status = std::system(("OMP_NUM_THREADS=1 " + cmd).c_str());
  ASSERT_EQ(status, 0) << test::read_file(t.dir + "/torchrun.out") << test::read_file(t.dir + "/torchrun.err");
  EXPECT_NE(test::read_file(t.dir + "/torchrun.out").find("data parallel: 2 ranks (torchrun)"), std::string::npos);
  expect_same_run(t.dir + "/ours", t.dir + "/torchrun");
}

TEST(DataParallel, LaunchErrorsSayWhatToFix) {
  TinyRun t;
  const auto recipe = write_recipe(t, "run", {"train.max_steps=2", "train.dist_timeout_s=3"});
  // A port in use.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const auto port = std::to_string(ntohs(addr.sin_port));
  auto r = test::run_qtune("train " + recipe, "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port);
  ::close(fd);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("could not serve the rendezvous at 127.0.0.1:" + port), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("MASTER_PORT"), std::string::npos) << r.err;
  // A MASTER_ADDR where no rank 0 listens.
  r = test::run_qtune("train " + recipe, "RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.9 MASTER_PORT=" +
                                             std::to_string(dist::free_local_port()));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("rank 1 could not reach rank 0's rendezvous at 127.0.0.9"), std::string::npos) << r.err;
  // A global batch the ranks cannot split: refused before any rank starts.
  r = test::run_qtune("train " + recipe + " --nproc 3 train.global_batch_size=16 train.batch_size=4");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("train.global_batch_size 16 is not a multiple of train.batch_size 4 x 3 rank(s) = 12"),
            std::string::npos)
      << r.err;
  // Under a launcher, --nproc is a contradiction.
  r = test::run_qtune("train " + recipe + " --nproc 2", "RANK=0 WORLD_SIZE=1");
  EXPECT_EQ(r.code, 1);
}

}  // namespace
}  // namespace qtune::train
