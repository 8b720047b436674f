// A run directory belongs to one run: a fresh run into a previous one is refused (nothing changed) unless
// --overwrite, a second process is refused with the holder's pid, and kill -9 leaves no stale lock.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "background_qtune.h"
#include "qtune/train/run_directory.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {
namespace fs = std::filesystem;

// Every path under `dir` with its size and modification time: what "nothing changed" compares.
std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> snapshot(const std::string& dir) {
  std::map<std::string, std::pair<uintmax_t, fs::file_time_type>> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().filename() == RunDirectoryLock::kFileName) continue;
    out[e.path().string()] = {e.is_regular_file() ? e.file_size() : 0, e.last_write_time()};
  }
  return out;
}

TEST(RunDirectory, AFreshRunIntoAPreviousRunIsRefusedUnlessOverwrite) {
  TinyRun t;
  const auto first = run_training(t.recipe({"train.max_steps=3"}), quiet());
  const auto before = snapshot(first.run_dir);
  auto other = t.recipe({"train.max_steps=2", "lora.r=4"});
  const auto e = test::error_of([&] { run_training(other, quiet()); });
  EXPECT_NE(e.find("holds a previous run (adapter, checkpoints, loss.svg, metrics.jsonl, recipe.yaml)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("--resume"), std::string::npos) << e;
  EXPECT_NE(e.find("--overwrite"), std::string::npos) << e;
  EXPECT_EQ(snapshot(first.run_dir), before);

  auto options = quiet();
  options.overwrite = true;
  fs::create_directories(first.run_dir + "/base-gptq-0123");  // a calibrated base: a cache, kept
  const auto second = run_training(other, options);
  EXPECT_TRUE(fs::exists(second.run_dir + "/base-gptq-0123"));
  EXPECT_EQ(second.steps, 2);
  // Only the new run's checkpoints and recipe are there: keep_last cannot prune the new run for the old one's.
  std::vector<std::string> checkpoints;
  for (const auto& c : fs::directory_iterator(second.run_dir + "/checkpoints"))
    if (c.is_directory()) checkpoints.push_back(c.path().filename().string());
  EXPECT_EQ(checkpoints, std::vector<std::string>{"step-00000002"});
  EXPECT_NE(test::read_file(second.run_dir + "/recipe.yaml").find("r: 4"), std::string::npos);
  // Files that are not a run's stay.
  io::write_text_atomically(second.run_dir + "/notes.txt", "mine\n");
  EXPECT_EQ(claim_for_fresh_run(second.run_dir, {run_entries("lora"), {}}, true).size(), 5u);
  EXPECT_TRUE(fs::exists(second.run_dir + "/notes.txt"));
  EXPECT_TRUE(previous_run_entries(second.run_dir).empty());
}

// Issue 36 #23: --overwrite removed every run-named entry, the user's own included. With train.output_dir the
// directory that holds the base in model/ (TinyRun's layout), a LoRA run trains beside it, --overwrite removes only
// what the previous run wrote, and a full fine-tune (which writes model/) is refused before anything changes.
TEST(RunDirectory, OverwriteRemovesOnlyWhatQtuneWroteAndNeverTheBase) {
  TinyRun t;
  const auto config = test::read_file(t.model + "/config.json");
  run_training(t.recipe({"train.max_steps=2", "train.output_dir=" + t.dir}), quiet());
  EXPECT_EQ(previous_run_entries(t.dir),
            (std::vector<std::string>{"adapter", "checkpoints", "loss.svg", "metrics.jsonl", "recipe.yaml"}));
  auto options = quiet();
  options.overwrite = true;
  run_training(t.recipe({"train.max_steps=1", "train.output_dir=" + t.dir}), options);
  EXPECT_EQ(test::read_file(t.model + "/config.json"), config);
  EXPECT_TRUE(fs::exists(t.model + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(t.dir + "/train.jsonl"));

  const auto before = snapshot(t.dir);
  for (bool overwrite : {false, true}) {
    options.overwrite = overwrite;
    const auto e = test::error_of(
        [&] { run_training(t.recipe({"train.max_steps=1", "train.mode=full", "quant.format=none", "train.output_dir=" + t.dir}), options); });
    EXPECT_NE(e.find("holds model, which no qtune run recorded writing"), std::string::npos) << e;
    EXPECT_EQ(snapshot(t.dir), before);
  }
}

// A hand-written recipe.yaml in train.output_dir is never overwritten, and --overwrite never removes an entry that
// holds one of the run's inputs (here the previous run's saved recipe.yaml, given as the recipe).
TEST(RunDirectory, AUsersRecipeInTheRunDirectoryIsNeverOverwrittenOrRemoved) {
  TinyRun t;
  const auto dir = t.dir + "/run";
  fs::create_directories(dir);
  io::write_text_atomically(dir + "/recipe.yaml", "# mine\n");
  const auto e = test::error_of([&] { run_training(t.recipe({"train.max_steps=1"}), quiet()); });
  EXPECT_NE(e.find("holds recipe.yaml, which no qtune run recorded writing"), std::string::npos) << e;
  EXPECT_EQ(test::read_file(dir + "/recipe.yaml"), "# mine\n");

  fs::remove(dir + "/recipe.yaml");
  run_training(t.recipe({"train.max_steps=1"}), quiet());
  const auto path = t.dir + "/run/recipe.yaml";
  const auto saved = Recipe::load(path, {"train.max_steps=2"});
  auto options = quiet();
  options.overwrite = true;
  const auto before = snapshot(dir);
  const auto refused = test::error_of([&] { run_training(saved, options); });
  EXPECT_NE(refused.find("--overwrite would remove " + dir + "/recipe.yaml, which holds this run's input"),
            std::string::npos)
      << refused;
  EXPECT_EQ(snapshot(dir), before);
}

// A run directory written by a qtune that kept no record: a fresh run is refused even with --overwrite (qtune cannot
// tell its files from the user's), and --resume adopts it.
TEST(RunDirectory, ARunWithoutARecordIsResumedButNeverRemoved) {
  TinyRun t;
  const auto recipe = t.recipe({"train.max_steps=2", "train.save_every=1"});
  auto stop = quiet();
  stop.stop_after_step = 1;
  run_training(recipe, stop);
  fs::remove(recipe.train.output_dir + "/" + kRunRecordFile);
  auto options = quiet();
  options.overwrite = true;
  const auto e = test::error_of([&] { run_training(recipe, options); });
  EXPECT_NE(e.find("which no qtune run recorded writing"), std::string::npos) << e;
  options = quiet();
  options.resume = "auto";
  const auto s = run_training(recipe, options);
  EXPECT_EQ(s.start_step, 1);
  EXPECT_EQ(previous_run_entries(recipe.train.output_dir).size(), 5u);
}

TEST(RunDirectory, ASecondProcessIsRefusedWithTheHoldersPid) {
  TinyRun t;
  auto recipe = t.recipe({"train.max_steps=2"});
  const auto path = t.dir + "/recipe.yaml";
  io::write_text_atomically(path, recipe.to_yaml());
  RunDirectoryLock held(recipe.train.output_dir);
  const auto r = test::run_qtune("train " + path);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("is in use by another qtune process (pid " + std::to_string(::getpid())), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(recipe.train.output_dir + "/recipe.yaml"));  // refused before writing anything
  // In this process too (flock conflicts between two opens of the file).
  EXPECT_NE(test::error_of([&] { RunDirectoryLock again(recipe.train.output_dir); }).find("in use"), std::string::npos);
}

TEST(RunDirectory, KillNineLeavesNoStaleLockAndResumeAutoContinues) {
  TinyRun t;
  auto recipe = t.recipe({"train.max_steps=400", "train.save_every=10", "train.log_every=100"});
  const auto path = t.dir + "/recipe.yaml";
  io::write_text_atomically(path, recipe.to_yaml());
  {
    test::BackgroundQtune run("train " + path, t.dir);
    ASSERT_TRUE(test::wait_for_path(recipe.train.output_dir + "/checkpoints/step-00000020", std::chrono::seconds(240)));
    ::kill(run.pid, SIGKILL);
    ASSERT_EQ(run.wait(std::chrono::seconds(30)), 128 + SIGKILL);
  }
  EXPECT_TRUE(fs::exists(recipe.train.output_dir + "/" + RunDirectoryLock::kFileName));  // the file stays, unlocked
  auto options = quiet();
  options.resume = "auto";
  const auto s = run_training(recipe, options);
  EXPECT_FALSE(s.resumed_from.empty());
  EXPECT_GE(s.start_step, 10);  // 20 when the kill came after step 20's save was published, else 10
  EXPECT_EQ(s.steps, 400);
}

}  // namespace
}  // namespace qtune::train
