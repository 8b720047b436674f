// qtune train RECIPE.yaml [key=value ...]: fine-tune LoRA adapters on the 4-bit base (or, train.mode full, a whole
// small model), as the recipe says.
#include <fmt/format.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "commands.h"
#include "qtune/dist/local_launch.h"
#include "qtune/dist/world.h"
#include "qtune/train/recipe.h"
#include "qtune/train/trainer.h"
#include "qtune/util/cpu_share.h"
#include "qtune/util/error.h"
#include "qtune/util/memory.h"

namespace qtune::cli {
namespace {

// This process's arguments after the program name, without --nproc and its value: what every rank runs.
std::vector<std::string> arguments_without_nproc() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string a; std::getline(in, a, '\0');) args.push_back(a);
  std::vector<std::string> out;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--nproc") {
      ++i;
      continue;
    }
    if (args[i].rfind("--nproc=", 0) == 0) continue;
    out.push_back(args[i]);
  }
  return out;
}

// A recipe key override ("lora.r=32", "name=x"), as opposed to a path.
bool is_override(const std::string& word) {
  static const std::regex pattern(R"(^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=)");
  return std::regex_search(word, pattern);
}

// CLI11 hands --resume the next word whatever it is: `r.yaml --resume k=v` resumed from "k=v", `--resume r.yaml k=v`
// took the override for the recipe. --resume takes a value only when it is `auto` or an existing directory (a
// checkpoint or run directory); another word goes back among the positionals, where the recipe is the one that is
// not a key=value override. Any other value is refused before the model loads.
void sort_positionals(std::string& resume, std::string& recipe, std::vector<std::string>& overrides) {
  std::vector<std::string> words;
  std::error_code ec;
  if (!resume.empty() && resume != "auto" && !std::filesystem::is_directory(resume, ec)) {
    if (!is_override(resume) && !std::filesystem::is_regular_file(resume, ec))
      fail("--resume '{}': no such checkpoint or run directory (expected auto, a checkpoint directory, or a run "
           "directory)",
           resume);
    words.push_back(resume);
    resume = "auto";
  }
  if (words.empty()) return;
  if (!recipe.empty()) words.push_back(recipe);
  words.insert(words.end(), overrides.begin(), overrides.end());
  recipe.clear(), overrides.clear();
  for (const auto& w : words) {
    if (recipe.empty() && !is_override(w))
      recipe = w;
    else
      overrides.push_back(w);
  }
}

}  // namespace

void add_train(CLI::App& app, Action& action) {
  struct Args {
    std::string recipe;
    std::vector<std::string> overrides;
    bool help_recipe = false, no_eval_before = false, force = false, overwrite = false;
    int nproc = 0;
    std::string resume;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("train", "Fine-tune LoRA adapters (or a whole model) as a YAML recipe says");
  cmd->add_option("RECIPE", args->recipe, "The recipe (see recipes/; qtune train --help-recipe lists every key)");
  cmd->add_option("OVERRIDES", args->overrides, "key=value overrides of recipe keys, e.g. lora.r=32 optim.lr=1e-4");
  cmd->add_flag("--help-recipe", args->help_recipe, "Print every recipe key with its type, default and meaning");
  cmd->add_flag("--no-eval-before", args->no_eval_before, "Skip the eval before the first step");
  cmd->add_option("--resume", args->resume,
                  "Continue an interrupted run: auto (the newest valid checkpoint of train.output_dir, or a fresh start "
                  "if none), or a checkpoint / run directory")
      ->expected(0, 1)
      ->default_str("auto");
  cmd->add_flag("--force", args->force, "Resume even though run-affecting recipe keys changed (they are listed)");
  cmd->add_flag("--overwrite", args->overwrite,
                "Start afresh in a train.output_dir that holds a previous run, removing that run first (without it "
                "such a run is refused)");
  cmd->add_option("--nproc", args->nproc,
                  "Data parallel on this machine: start N ranks (Gloo over loopback on CPU; one GPU each on CUDA). "
                  "Under torchrun, mpirun or srun, leave it out: the launcher's variables say the rank")
      ->check(CLI::Range(1, 1024));
  cmd->footer("Example: qtune train recipes/demo-qlora.yaml train.max_steps=50 lora.r=8");
  cmd->callback([args, &action] {
    action = [args] {
      if (args->help_recipe) {
        fmt::print("{}", train::recipe_help());
        return 0;
      }
      sort_positionals(args->resume, args->recipe, args->overrides);
      if (args->recipe.empty() || is_override(args->recipe))
        fail("qtune train: give a recipe file before any key=value override (or --help-recipe for the keys)");
      const auto recipe = train::Recipe::load(args->recipe, args->overrides);
      const auto world = dist::world_from_environment();
      if (args->nproc > 1 && world.launcher != "none")
        fail("qtune train --nproc {}: this process is already rank {} of {} (started by {}); leave --nproc out under a "
             "launcher",
             args->nproc, world.rank, world.size, world.launcher);
      if (args->nproc > 1) {
        train::with_global_batch(recipe, args->nproc);  // its error before any rank starts
        if (const auto w = cpu_oversubscription_warning(dist::available_cores()); !w.empty())
          fmt::print(stderr, "{}\n", w);
        dist::LocalLaunch launch;
        launch.nproc = args->nproc;
        launch.args = arguments_without_nproc();
        return dist::run_local_ranks(launch);
      }
      train::TrainOptions options;
      options.eval_before = !args->no_eval_before;
      options.resume = args->resume;
      options.force = args->force;
      options.overwrite = args->overwrite;
      if (world.launcher != "none") {  // a launcher's world of one still forms its group (the GPU check runs NCCL so)
        // CPU ranks on one machine split its cores, unless the launcher chose (torchrun sets OMP_NUM_THREADS).
        if (!std::getenv("OMP_NUM_THREADS"))
          at::set_num_threads(std::max(1, dist::available_cores() / world.local_size));
        const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(recipe.train.dist_timeout_s * 1000));
        options.comm = dist::Communicator::connect(world, timeout);
      } else if (const auto w = cpu_oversubscription_warning(at::get_num_threads()); !w.empty()) {
        fmt::print(stderr, "{}\n", w);
      }
      const auto s = train::run_training(recipe, options);
      if (world.rank != 0) return 0;  // rank 0 reports the run
      if (!s.resumed_from.empty()) fmt::print("resumed from {} at step {}\n", s.resumed_from, s.start_step);
      // The end of the run as a mean of its last log interval (one step may be a short epoch tail), beside the
      // run's mean: HF's logged loss and train_loss.
      const auto recent = s.recent_from >= s.steps ? fmt::format("step {}", s.steps)
                                                   : fmt::format("mean of steps {}-{}", s.recent_from, s.steps);
      fmt::print("trained {} steps on {} target tokens in {:.1f}s; train loss {:.4f} -> {:.4f} (step 1 -> {}); mean "
                 "{:.4f} over the run\n",
                 s.steps, s.tokens, s.seconds, s.first_loss, s.recent_loss, recent, s.mean_loss);
      if (s.eval_before && s.eval_after)
        fmt::print("eval loss {:.4f} -> {:.4f} (perplexity {:.3f} -> {:.3f})\n", s.eval_before->loss, s.eval_after->loss,
                   s.eval_before->perplexity, s.eval_after->perplexity);
      else if (s.eval_after)
        fmt::print("eval loss {:.4f} (perplexity {:.3f})\n", s.eval_after->loss, s.eval_after->perplexity);
      if (s.skipped_steps) fmt::print("{} fp16 steps skipped on inf/NaN gradients\n", s.skipped_steps);
      fmt::print("run directory: {} (metrics.jsonl, loss.svg, recipe.yaml); {}: {}\n", s.run_dir,
                 s.adapter_dir.empty() ? "model" : "adapter", s.adapter_dir.empty() ? s.model_dir : s.adapter_dir);
      return 0;
    };
  });
}

}  // namespace qtune::cli
