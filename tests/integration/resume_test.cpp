// Exact resume: a stopped or killed run continues where it stood, bit for bit; checkpoints are verified, pruned, and a
// corrupt one is skipped; a changed recipe is refused.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qtune/io/atomic_file.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/metrics_log.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;


// N steps in one go, and N/2 steps + stop + resume, give identical per-step losses and byte-identical adapters:
// with dropout on (the generator state is restored), gradient accumulation and packing (the data position is), for
// every optimizer (their states are), and fp16 loss scaling (its scale is).
TEST(Resume, StoppedAndResumedRunIsBitIdenticalToAnUninterruptedOne) {
  TinyRun t;
  for (const std::string opt : {"adamw", "paged_adamw", "adamw_8bit", "paged_adamw_8bit"}) {
    for (const std::string precision : {"fp32", "fp16"}) {
      if (precision == "fp16" && opt != "adamw") continue;
      const std::vector<std::string> keys = {"optim.name=" + opt, "train.precision=" + precision, "train.max_steps=8",
                                             "train.grad_accum=2", "lora.dropout=0.1", "train.save_every=2",
                                             "schedule.kind=cosine", "train.output_dir=" + t.dir + "/a_" + opt + precision};
      std::vector<double> straight, resumed;
      auto o = quiet();
      o.on_step = [&](int64_t, double loss) { straight.push_back(loss); };
      run_training(t.recipe(keys), o);

      auto keys_b = keys;
      keys_b.back() = "train.output_dir=" + t.dir + "/b_" + opt + precision;
      auto first = quiet();
      first.stop_after_step = 4;
      first.on_step = [&](int64_t, double loss) { resumed.push_back(loss); };
      run_training(t.recipe(keys_b), first);
      ASSERT_EQ(resumed.size(), 4u);
      auto second = quiet();
      second.resume = "auto";
      second.on_step = [&](int64_t, double loss) { resumed.push_back(loss); };
      const auto s = run_training(t.recipe(keys_b), second);
      EXPECT_EQ(s.start_step, 4);
      ASSERT_EQ(straight.size(), 8u);
      ASSERT_EQ(resumed.size(), 8u);
      for (size_t i = 0; i < 8; ++i) EXPECT_EQ(resumed[i], straight[i]) << opt << " " << precision << " step " << i + 1;
      EXPECT_TRUE(test::read_file(t.dir + "/a_" + opt + precision + "/adapter/adapter_model.safetensors") ==
                  test::read_file(t.dir + "/b_" + opt + precision + "/adapter/adapter_model.safetensors"))
          << opt << " " << precision;
      // The metrics log holds each step once, the redone ones included.
      int64_t train_records = 0;
      for (const auto& rec : MetricsLog::read(t.dir + "/b_" + opt + precision + "/metrics.jsonl"))
        train_records += rec.kind == "train";
      EXPECT_EQ(train_records, 3);  // steps 1, 5 and 8 (log_every 5, the first and the last)
    }
  }
}

TEST(Resume, KeepsTheLastCheckpointsAndRefusesAnotherRecipe) {
  TinyRun t;
  auto o = quiet();
  o.stop_after_step = 6;
  run_training(t.recipe({"train.max_steps=8", "train.save_every=2", "train.keep_last=2"}), o);
  const auto dir = t.dir + "/run/checkpoints/";
  EXPECT_FALSE(fs::exists(dir + "step-00000002"));
  EXPECT_TRUE(fs::exists(dir + "step-00000004"));
  EXPECT_TRUE(fs::exists(dir + "step-00000006"));
  EXPECT_EQ(test::read_file(dir + "latest"), "step-00000006\n");
  // Each checkpoint carries the metrics up to its step.
  const auto saved_metrics = MetricsLog::read(dir + "step-00000004/metrics.jsonl");
  ASSERT_FALSE(saved_metrics.empty());
  for (const auto& m : saved_metrics) EXPECT_LE(m.step, 4);
  auto resume = quiet();
  resume.resume = "auto";
  const auto msg = test::error_of(
      [&] { run_training(t.recipe({"train.max_steps=8", "train.save_every=2", "lora.r=4", "optim.lr=1e-3"}), resume); });
  EXPECT_NE(msg.find("lora.r: 8 -> 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("optim.lr"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--force"), std::string::npos) << msg;
  // Cadence keys may change on resume.
  const auto s = run_training(t.recipe({"train.max_steps=8", "train.save_every=2", "train.log_every=1"}), resume);
  EXPECT_EQ(s.start_step, 6);
  EXPECT_EQ(s.steps, 8);
}

// Issue 36 #25: a resume launched from another working directory, through another spelling of the same files (a
// symlinked directory, relative paths), was refused as "another recipe". Paths compare as files, data by its hash.
TEST(Resume, AnotherSpellingOfTheSameFilesFromAnotherWorkingDirectoryResumes) {
  TinyRun t;
  fs::create_directories(t.dir + "/cfg");
  const auto text = t.recipe({"train.max_steps=4", "train.save_every=1"}).to_yaml();
  auto relative = text;
  for (const std::string name : {"/model", "/train.jsonl", "/eval.jsonl"}) {
    const auto at = relative.find(t.dir + name + "\n");
    ASSERT_NE(at, std::string::npos) << name;
    relative.replace(at, t.dir.size(), "..");
  }
  io::write_text_atomically(t.dir + "/cfg/recipe.yaml", relative);
  auto first = quiet();
  first.stop_after_step = 2;
  run_training(Recipe::load(t.dir + "/cfg/recipe.yaml"), first);

  // The same recipe through a symlinked directory, from another working directory (getcwd resolves symlinks, so the
  // other spelling comes from the recipe's own path).
  fs::create_directory_symlink(t.dir, t.dir + "/link");
  fs::create_directories(t.dir + "/elsewhere");
  const auto previous = fs::current_path();
  fs::current_path(t.dir + "/elsewhere");
  auto resume = quiet();
  resume.resume = "auto";
  const auto recipe = Recipe::load(t.dir + "/link/cfg/recipe.yaml");
  fs::current_path(previous);
  EXPECT_EQ(recipe.model.path, t.dir + "/link/model");
  const auto s = run_training(recipe, resume);
  EXPECT_EQ(s.start_step, 2);
  EXPECT_EQ(s.steps, 4);
}

TEST(Resume, ACorruptLatestCheckpointFallsBackToThePreviousOne) {
  TinyRun t;
  auto o = quiet();
  o.stop_after_step = 4;
  run_training(t.recipe({"train.max_steps=6", "train.save_every=2"}), o);
  const auto dir = t.dir + "/run/checkpoints/";
  // Truncate the newest checkpoint's optimizer state, as a full disk would.
  fs::resize_file(dir + "step-00000004/optimizer.safetensors", 100);
  auto msg = test::error_of([&] { verify_checkpoint(dir + "step-00000004"); });
  EXPECT_NE(msg.find("optimizer.safetensors has 100 bytes"), std::string::npos) << msg;
  std::vector<std::string> warnings;
  EXPECT_EQ(find_resume_checkpoint(t.dir + "/run", [&](const std::string& w) { warnings.push_back(w); }),
            dir + "step-00000002");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step-00000004"), std::string::npos);
  auto resume = quiet();
  resume.resume = "auto";
  const auto s = run_training(t.recipe({"train.max_steps=6", "train.save_every=2"}), resume);
  EXPECT_EQ(s.start_step, 2);
  // A flipped byte is caught by the checksum.
  const auto p = dir + "step-00000006/trainable.safetensors";
  auto bytes = test::read_file(p);
  bytes[bytes.size() - 3] ^= 0x40;
  std::ofstream(p, std::ios::binary) << bytes;
  msg = test::error_of([&] { verify_checkpoint(dir + "step-00000006"); });
  EXPECT_NE(msg.find("does not match its checksum"), std::string::npos) << msg;
}

}  // namespace
}  // namespace qtune::train

namespace qtune::train {
namespace {

// A process killed with SIGKILL while it writes a checkpoint leaves the previous one valid, and resuming from it
// ends with the adapter an uninterrupted run writes, byte for byte.
TEST(Resume, KilledWhileSavingAtEveryStageThenResumedEndsWithTheSameAdapter) {
  TinyRun t;
  auto write_recipe = [&](const std::string& out) {
    const auto path = t.dir + "/" + out + ".yaml";
    io::write_text_atomically(path, t.recipe({"train.max_steps=6", "train.save_every=2", "lora.dropout=0.1",
                                              "train.output_dir=" + t.dir + "/" + out})
                                        .to_yaml());
    return path;
  };
  const auto reference = write_recipe("reference");
  ASSERT_EQ(test::run_qtune("train " + reference).code, 0);
  const auto expected = test::read_file(t.dir + "/reference/adapter/adapter_model.safetensors");
  ASSERT_FALSE(expected.empty());
  // Crash points 1..9 are the first save (step 2), 10..18 the second (step 4).
  for (int at : {2, 10, 12, 14, 16, 17, 18}) {
    const auto name = "crash" + std::to_string(at);
    const auto recipe = write_recipe(name);
    const auto killed = test::run_qtune("train " + recipe, "QTUNE_CRASH_AT=" + std::to_string(at));
    EXPECT_TRUE(killed.killed) << "crash point " << at << " exit " << killed.code;
    const auto found = find_resume_checkpoint(t.dir + "/" + name, nullptr);
    if (at <= kCheckpointCrashPoints - 2) {
      EXPECT_FALSE(found.has_value()) << at;  // killed before the first checkpoint was renamed into place
    } else {
      ASSERT_TRUE(found.has_value()) << at;
      EXPECT_NO_THROW(verify_checkpoint(*found)) << at;
    }
    ASSERT_EQ(test::run_qtune("train " + recipe + " --resume auto").code, 0) << "resume after crash point " << at;
    EXPECT_TRUE(test::read_file(t.dir + "/" + name + "/adapter/adapter_model.safetensors") == expected)
        << "crash point " << at;
  }
}

}  // namespace
}  // namespace qtune::train
