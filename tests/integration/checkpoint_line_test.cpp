// A run directory's checkpoints form one line: resuming from an older checkpoint abandons the newer ones (moved
// aside, never resumed or counted by pruning), `--resume auto` follows `latest`, and pruning never deletes the
// checkpoint just written.
#include <gtest/gtest.h>

#include <filesystem>

#include "qtune/io/atomic_file.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/trainer.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::train {
namespace {

namespace fs = std::filesystem;

TEST(CheckpointLine, ResumingFromAnOlderCheckpointAbandonsTheNewerOnes) {
  TinyRun t;
  auto o = quiet();
  o.stop_after_step = 6;
  run_training(t.recipe({"train.max_steps=8", "train.save_every=2", "train.keep_last=3"}), o);
  const auto dir = t.dir + "/run/checkpoints/";
  ASSERT_TRUE(fs::exists(dir + "step-00000002") && fs::exists(dir + "step-00000006"));

  // Back to step 2, keeping one checkpoint, stop after step 4: the line is now 2 -> 4, and step 6 belongs to an
  // abandoned one.
  const std::vector<std::string> keys = {"train.max_steps=8", "train.save_every=2", "train.keep_last=1"};
  auto back = quiet();
  back.resume = dir + "step-00000002/";  // as a shell completes it
  back.stop_after_step = 4;
  const auto s = run_training(t.recipe(keys), back);
  EXPECT_EQ(s.start_step, 2);
  EXPECT_TRUE(fs::exists(dir + "step-00000004")) << "pruning deleted the checkpoint it had just written";
  EXPECT_FALSE(fs::exists(dir + "step-00000002")) << "keep_last 1 keeps only the newest of the line";
  EXPECT_FALSE(fs::exists(dir + "step-00000006")) << "the abandoned step 6 is still where resume looks";
  EXPECT_TRUE(fs::exists(dir + "abandoned/step-00000006/manifest.json")) << "the abandoned checkpoint was lost";
  EXPECT_EQ(test::read_file(dir + "latest"), "step-00000004\n");

  // --resume auto continues the current line: from step 4, not from the abandoned step 6.
  EXPECT_EQ(find_resume_checkpoint(t.dir + "/run", nullptr), dir + "step-00000004");
  auto resume = quiet();
  resume.resume = "auto";
  EXPECT_EQ(run_training(t.recipe(keys), resume).start_step, 4);
}

TEST(CheckpointLine, AutoResumeFollowsLatestAndSkipsAnUnpublishedNewerCheckpoint) {
  TinyRun t;
  const std::vector<std::string> keys = {"train.max_steps=6", "train.save_every=2"};
  auto o = quiet();
  o.stop_after_step = 4;
  run_training(t.recipe(keys), o);
  const auto dir = t.dir + "/run/checkpoints/";
  // A save killed after renaming step 4 into place but before publishing it in `latest`.
  io::write_text_atomically(dir + "latest", "step-00000002\n");
  std::vector<std::string> warnings;
  EXPECT_EQ(find_resume_checkpoint(t.dir + "/run", [&](const std::string& w) { warnings.push_back(w); }),
            dir + "step-00000002");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step-00000004"), std::string::npos) << warnings[0];
  // Without `latest` the newest valid checkpoint is the head of the line.
  fs::remove(dir + "latest");
  EXPECT_EQ(find_resume_checkpoint(t.dir + "/run", nullptr), dir + "step-00000004");
}

TEST(CheckpointLine, AFreshRunIntoTheSameDirectoryNeverResumesTheOldRun) {
  TinyRun t;
  auto o = quiet();
  o.stop_after_step = 4;
  run_training(t.recipe({"train.max_steps=6", "train.save_every=2"}), o);
  // A fresh run (no --resume) is refused there; with --overwrite it replaces the old run, and the old run's step 4
  // must not be what auto resumes next.
  auto fresh = quiet();
  fresh.stop_after_step = 2;
  EXPECT_NE(test::error_of([&] { run_training(t.recipe({"train.max_steps=6", "train.save_every=2"}), fresh); })
                .find("holds a previous run"),
            std::string::npos);
  EXPECT_TRUE(fs::exists(t.dir + "/run/checkpoints/step-00000004"));
  fresh.overwrite = true;
  run_training(t.recipe({"train.max_steps=6", "train.save_every=2"}), fresh);
  const auto dir = t.dir + "/run/checkpoints/";
  EXPECT_EQ(find_resume_checkpoint(t.dir + "/run", nullptr), dir + "step-00000002");
  EXPECT_FALSE(fs::exists(dir + "step-00000004"));
  EXPECT_FALSE(fs::exists(dir + "abandoned/step-00000004"));  // removed with the old run, not kept aside
}

// The same recipe over an edited data file is another run: resuming it is refused (naming the file) unless --force.
TEST(CheckpointLine, ResumingOnAnEditedDataFileIsRefused) {
  TinyRun t;
  auto o = quiet();
  o.stop_after_step = 2;
  run_training(t.recipe({"train.max_steps=4", "train.save_every=2"}), o);
  const auto data = test::read_file(t.dir + "/train.jsonl");
  io::write_text_atomically(t.dir + "/train.jsonl", data.substr(0, data.find('\n', data.size() / 2) + 1));  // whole lines
  auto resume = quiet();
  resume.resume = "auto";
  const auto msg = test::error_of([&] { run_training(t.recipe({"train.max_steps=4", "train.save_every=2"}), resume); });
  EXPECT_NE(msg.find("trained on other data"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.jsonl"), std::string::npos) << msg;
  resume.force = true;
  EXPECT_EQ(run_training(t.recipe({"train.max_steps=4", "train.save_every=2"}), resume).start_step, 2);
}

}  // namespace
}  // namespace qtune::train
