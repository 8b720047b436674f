#include "qtune/train/trainer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <fmt/ranges.h>

#include <chrono>
#include <filesystem>
#include <map>

#include "qtune/dist/gradient_all_reduce.h"
#include "qtune/export/peft_adapter.h"
#include "qtune/lora/row_dropout.h"
#include "qtune/io/atomic_file.h"
#include "qtune/nn/model_io.h"
#include "qtune/optim/optimizer.h"
#include "qtune/optim/schedule.h"
#include "qtune/qat/qat_options.h"
#include "qtune/train/calibrated_base.h"
#include "qtune/train/checkpoint.h"
#include "qtune/train/loss_plot.h"
#include "qtune/train/metrics_log.h"
#include "qtune/train/precision.h"
#include "qtune/train/objectives/sft.h"
#include "qtune/train/progress.h"
#include "qtune/train/reference_cache.h"
#include "qtune/train/qat_layers.h"
#include "qtune/train/run_directory.h"
#include "qtune/train/run_setup.h"
#include "qtune/train/step_sync.h"
#include "qtune/util/device.h"
#include "qtune/util/error.h"
#include "qtune/util/memory.h"
#include "qtune/util/remove_tree.h"
#include "qtune/util/rng.h"

namespace qtune::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Rank `rank`'s rows of a global micro-batch whose ranks hold `share` samples of `rows` rows each (all of it for one
// rank).
data::Batch rank_share(data::Batch global, int64_t rank, int64_t ranks, int64_t share, int64_t rows) {
  return ranks > 1 ? data::slice_rows(global, rank * share * rows, (rank + 1) * share * rows) : global;
}

// One optimizer step's micro-batches: this rank's share of each, and where its rows lie in their epoch (the key of
// their dropout masks).
struct StepBatches {
  std::vector<data::Batch> batches;
  std::vector<lora::DropoutRows> rows;
};

// Writes the trained result into `dir` (complete or not at all: written beside it, then renamed).
void save_result(RunSetup& run, const std::string& dir) {
  const auto tmp = dir + ".tmp";
  remove_tree(tmp);
  if (run.recipe.train.mode == "lora") {
    exporting::save_peft_adapter(*run.model, run.recipe.lora.config, run.recipe.model.path, tmp);
  } else {
    nn::save_pretrained(*run.model, tmp, run.recipe.model.path);  // the base's generation_config.json travels along
    run.copy_tokenizer_files(tmp);
  }
  remove_tree(dir);
  std::filesystem::rename(tmp, dir);
}

// The generator states dropout draws from: the CPU one, and the device's on CUDA.
io::NamedTensors rng_states(at::Device device) {
  io::NamedTensors out{{"cpu", generator_state(at::detail::getDefaultCPUGenerator())}};
  if (device.is_cuda()) out.emplace_back(device.str(), generator_state(at::globalContext().defaultGenerator(device)));
  return out;
}

void restore_rng(const io::NamedTensors& states, at::Device device, const std::string& where) {
  for (const auto& [name, state] : states) {
    if (name != "cpu" && name != device.str()) continue;  // a CUDA run resumed on another device index: CPU only
    auto g = name == "cpu" ? at::detail::getDefaultCPUGenerator() : at::globalContext().defaultGenerator(device);
    try {
      set_generator_state(g, state);
    } catch (const std::exception& e) {
      fail("{}: generator state '{}' does not fit this build ({})", where, name, e.what());
    }
  }
}

void restore_trainable(const io::NamedTensors& saved, const std::vector<std::pair<std::string, at::Tensor>>& params,
                       const std::string& where) {
  std::map<std::string, at::Tensor> by_name(saved.begin(), saved.end());
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail("{}: the checkpoint has no '{}' (a run with other adapters?)", where, name);
    if (it->second.sizes() != p.sizes())
      fail("{}: '{}' is [{}] in the checkpoint but [{}] in this run", where, name, fmt::join(it->second.sizes(), ", "),
           fmt::join(p.sizes(), ", "));
    p.copy_(it->second);
  }
  if (by_name.size() != params.size())
    fail("{}: the checkpoint holds {} trained tensors, this run trains {}", where, by_name.size(), params.size());
}

std::string recipe_hash(const Recipe& r) {
  std::string text;
  for (const auto& [k, v] : r.run_affecting_values()) text += k + "=" + v + "\n";
  return text_hash(text);
}

// The contents of the files a run reads its samples from: the same recipe over an edited file is another run.
std::string data_hash(const Recipe& r) {
  std::string text;
  for (const auto& path : {r.data.train, r.data.eval})
    if (!path.empty()) text += file_hash(path) + "\n";
  return text_hash(text);
}

// Whether two spellings name one file or directory (both empty counts as the same).
bool same_file(const std::string& a, const std::string& b) {
  if (a == b) return true;
  std::error_code ec;
  return !a.empty() && !b.empty() && std::filesystem::equivalent(a, b, ec) && !ec;
}

// A resumed run must compute what the interrupted one would have: the keys that change that must be equal.
void check_same_recipe(const Recipe& now, const std::string& saved_yaml, const std::string& where, bool force,
                       Progress& progress) {
  const auto saved_recipe = Recipe::parse(saved_yaml, where + "/recipe.yaml");
  const auto saved = saved_recipe.run_affecting_values();
  const auto saved_paths = saved_recipe.input_paths();
  std::vector<std::string> changed;
  for (const auto& [k, v] : now.run_affecting_values()) {
    // With train.global_batch_size, grad_accum follows from the number of ranks, which a resume may change.
    if (k == "train.grad_accum" && now.train.global_batch_size > 0) continue;
    // A path names the same input however it is spelled (a checkpoint of an older qtune saved relative paths); the
    // data's own contents are compared by their hash below, wherever the files lie.
    if (k == "data.train" || k == "data.eval") continue;
    if (const auto p = saved_paths.find(k); p != saved_paths.end() && same_file(p->second, now.input_paths().at(k)))
      continue;
    auto it = saved.find(k);
    if (it != saved.end() && it->second != v) changed.push_back(fmt::format("{}: {} -> {}", k, it->second, v));
  }
  if (changed.empty()) return;
  const auto list = fmt::format("{}", fmt::join(changed, "; "));
  if (!force)
    fail("{} was trained with another recipe ({}); resuming would not continue that run. Restore those keys, start a "
         "new run (another train.output_dir), or pass --force",
         where, list);
  progress.message(fmt::format("warning: resuming {} with changed keys ({}) because of --force", where, list));
}

}  // namespace

EvalResult evaluate(nn::CausalLMImpl& model, const data::DataLoader& loader, int64_t max_batches,
                    dist::Communicator* comm, Objective* objective) {
  SftObjective sft;
  if (!objective) objective = &sft;
  torch::NoGradGuard no_grad;
  const int64_t ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const int64_t share = loader.options().batch_size / ranks;
  const bool was_training = model.is_training();
  model.eval();
  double sum = 0;
  int64_t tokens = 0;
  // max_batches counts batches of one rank's rows, so that every world size scores the same samples: a global batch
  // holds `ranks` of them, and the shares past max_batches sit the last one out.
  const int64_t all = loader.batches_per_epoch(0);
  const int64_t n = max_batches > 0 ? std::min((max_batches + ranks - 1) / ranks, all) : all;
  for (int64_t i = 0; i < n; ++i) {
    auto b = rank_share(loader.batch(0, i), rank, ranks, share, loader.rows_per_sample());
    if (max_batches > 0 && i * ranks + rank >= max_batches) b = data::slice_rows(b, 0, 0);  // sits this one out
    objective->prepare(model, b, comm);
    const int64_t units = objective->units(b);
    if (units == 0) continue;
    auto ls = objective->loss(model, b);
    sum += ls.sum.item<double>();
    tokens += units;
  }
  model.train(was_training);
  const bool token_loss = dynamic_cast<SftObjective*>(objective) != nullptr;
  if (comm && comm->connected()) {
    std::vector<at::Tensor> totals{at::tensor({sum, static_cast<double>(tokens)}, at::kDouble)};
    comm->all_reduce_sum(totals, "the eval loss");
    sum = totals[0][0].item<double>();
    tokens = static_cast<int64_t>(totals[0][1].item<double>());
  }
  EvalResult r;
  r.tokens = tokens;
  if (tokens > 0) r.loss = sum / static_cast<double>(tokens), r.perplexity = token_loss ? std::exp(r.loss) : NAN;
  return r;
}

Recipe with_global_batch(Recipe r, int64_t ranks) {
  if (r.train.global_batch_size <= 0) return r;
  const int64_t per_micro = r.train.batch_size * ranks;
  if (r.train.global_batch_size % per_micro != 0)
    fail("{}: train.global_batch_size {} is not a multiple of train.batch_size {} x {} rank(s) = {}: choose a global "
         "batch that {} rank(s) can split, or another train.batch_size",
         r.source, r.train.global_batch_size, r.train.batch_size, ranks, per_micro, ranks);
  r.train.grad_accum = r.train.global_batch_size / per_micro;
  return r;
}

namespace {

// A checkpoint written by another number of ranks continues only with the same rows per step (so the same steps,
// schedule and epoch ends): train.global_batch_size keeps them, grad_accum following the ranks. Its `index` counted
// micro-batches of saved x batch_size rows: the same position in this run's micro-batches (an epoch's end stays its
// end), when it falls on one.
int64_t index_for_ranks(const TrainerState& s, const std::string& saved_yaml, const Recipe& now, int64_t ranks,
                        const data::DataLoader& loader, const std::string& where) {
  const int64_t saved = s.world_size;
  if (saved == ranks) return s.index;
  const auto saved_recipe = Recipe::parse(saved_yaml, where + "/recipe.yaml");
  const int64_t rows_then = saved * saved_recipe.train.batch_size * saved_recipe.train.grad_accum;
  const int64_t rows_now = ranks * now.train.batch_size * now.train.grad_accum;
  if (rows_then != rows_now)
    fail("{}: saved by {} rank(s) with {} rows per step; {} rank(s) would train {} per step, another run. Set "
         "train.global_batch_size: {} (grad_accum then follows the ranks), or resume with {} rank(s)",
         where, saved, rows_then, ranks, rows_now, rows_then, saved);
  const int64_t row = s.index * saved * now.train.batch_size;  // rows of the epoch already trained
  if (row >= loader.rows_per_epoch(s.epoch)) return loader.batches_per_epoch(s.epoch);
  if ((s.index * saved) % ranks != 0)
    fail("{}: saved by {} rank(s) at micro-batch {} of its epoch, a position {} rank(s) cannot start at (it is not a "
         "multiple of their micro-batch); resume with {} rank(s), or a number that divides {}",
         where, saved, s.index, ranks, saved, s.index * saved);
  return s.index * saved / ranks;
}

// What to do after the run stops on an error: resume from its last checkpoint, or start again when none was saved.
std::string recovery_advice(const std::string& checkpoint, int64_t step) {
  if (checkpoint.empty())
    return "no checkpoint was saved yet (train.save_every): fix the cause and start the run again";
  return fmt::format("the last checkpoint, {} (step {}), is intact: fix the cause and resume with --resume auto",
                     checkpoint, step);
}

struct NullOutput {  // where the ranks other than 0 print their progress: nowhere
  std::FILE* f = std::fopen("/dev/null", "w");
  ~NullOutput() {
    if (f) std::fclose(f);
  }
};

}  // namespace

TrainSummary run_training(const Recipe& recipe_in, const TrainOptions& options) {
  const auto start = Clock::now();
  const auto comm = options.comm ? options.comm : dist::Communicator::single();
  const int64_t ranks = comm->size(), rank = comm->rank();
  const bool root = comm->is_root();
  NullOutput null_output;
  std::FILE* out = root ? options.out : null_output.f;
  const Recipe recipe = with_global_batch(recipe_in, ranks);
  resolve_device(recipe.device, device_key(recipe));  // a missing GPU fails before a base is calibrated or loaded
  const auto run_dir = recipe.train.output_dir;
  // Rank 0 owns the run directory for the whole run; the others only read from it.
  std::optional<RunDirectoryLock> lock;
  if (root) {
    lock.emplace(run_dir);
    RunClaim claim{run_entries(recipe.train.mode),
                   {recipe.source, recipe.model.path, recipe.model.tokenizer, recipe.data.train, recipe.data.eval,
                    recipe.quant.plan, recipe.quant.calib, recipe.lora.init_adapter}};
    if (options.resume.empty()) {
      for (const auto& removed : claim_for_fresh_run(run_dir, claim, options.overwrite))
        fmt::print(out, "--overwrite: removed {}/{} of the previous run\n", run_dir, removed);
    } else {
      claim_for_resume(run_dir, claim);
    }
  }
  const auto long_wait = std::chrono::hours(24);
  // The checkpoint to resume from, chosen (and verified) before the model loads: a wrong --resume argument fails at
  // once. Rank 0 chooses it; every rank then reads the same one.
  std::optional<std::string> resume_dir;
  if (!options.resume.empty()) {
    auto warn = [&](const std::string& m) { fmt::print(stderr, "warning: {}\n", m); };
    if (root)
      resume_dir = options.resume == "auto" ? find_resume_checkpoint(run_dir, warn)
                                            : std::optional<std::string>(resolve_checkpoint(options.resume, warn));
    const auto chosen = comm->share_from_root("resume", resume_dir ? "1" + *resume_dir : "0", long_wait);
    if (chosen != "0") resume_dir = chosen.substr(1);
  }
  Recipe effective = recipe;  // with quant.method, model.path becomes the calibrated base it trains on
  effective.model.path = comm->share_from_root("model_path", root ? calibrated_base(recipe, out) : "", long_wait);
  if (ranks > 1 && effective.device != "cpu" && resolve_device(effective.device).is_cuda())
    effective.device = fmt::format("cuda:{}", comm->world().local_rank);  // one rank per GPU
  if (ranks > 1 && parse_qat_layers(effective.quant, effective.source).needs_ranking()) {
    // Rank 0 ranks the linears into the run directory's cache before any rank sets up: the others read it there.
    comm->share_from_root("qat_ranking", root ? rank_qat_layers(effective, out) : "", long_wait);
  }
  RunSetup run = RunSetup::create(effective, out, ranks);
  auto& model = *run.model;
  const auto& r = run.recipe;
  const int64_t share = r.train.batch_size;  // rows of each global micro-batch this rank trains
  if (root) io::write_text_atomically(run_dir + "/recipe.yaml", r.to_yaml());

  TrainSummary summary;
  summary.run_dir = run_dir;
  const int64_t total = run.total_steps;
  optim::ScheduleOptions sched{r.schedule.kind, run.warmup_steps, r.schedule.min_lr_ratio};
  auto optimizer = optim::make_optimizer(
      r.optim.name, run.trainable,
      optim::AdamWOptions{r.optim.lr, r.optim.beta1, r.optim.beta2, r.optim.eps, r.optim.weight_decay});
  const bool fp16 = run.dtype == at::kHalf;
  DynamicLossScaler scaler;
  std::vector<at::Tensor> params;
  for (const auto& [name, p] : run.trainable) params.push_back(p);
  dist::GradientAllReduce gradient_sync(params);
  const auto objective = make_objective(r);
  const auto metric_names = objective->metric_names();
  if (comm->connected())
    fmt::print(out, "data parallel: {} ranks ({}), {} rows per rank and micro-batch; {} of gradients all-reduced per "
                    "step in {} bucket(s) by {}, timeout {} s\n",
               ranks, comm->world().launcher, share, format_bytes(gradient_sync.bytes()), gradient_sync.buckets(),
               run.device.is_cuda() ? dist::Communicator::cuda_backend_name() : "gloo", r.train.dist_timeout_s);

  const bool terminal = options.terminal.value_or(Progress::stdout_is_terminal() && options.out == stdout) && root;
  Progress progress(out, terminal, r.train.log_every);
  Checkpointer checkpointer(run_dir, r.train.keep_last);
  StepSync step_sync(*comm, gradient_sync, r.train.log_every, total);
  at::manual_seed(r.train.seed);  // dropout outside the trainer's row-keyed scopes (a resume restores it)

  TrainerState st;
  st.recipe_hash = recipe_hash(r);
  st.data_hash = data_hash(r);
  st.world_size = ranks;
  if (!options.resume.empty()) {
    std::optional<std::string> dir = resume_dir;
    if (!dir) {
      if (root)
        fmt::print(stderr, "warning: --resume {}: no checkpoint in {}; starting a fresh run\n", options.resume, run_dir);
    } else {
      auto c = load_checkpoint(*dir);
      check_same_recipe(r, c.recipe_yaml, *dir, options.force, progress);
      restore_trainable(c.trainable, run.trainable, *dir);
      optimizer->load_state_dict(c.optimizer);
      if (!c.state.loss_scaler.empty()) scaler.load_state(c.state.loss_scaler);
      restore_rng(c.rng, run.device, *dir);
      if (!c.state.data_hash.empty() && c.state.data_hash != st.data_hash) {
        if (!options.force)
          fail("{} was trained on other data: {} (or data.eval) changed since; resuming would not continue that run. "
               "Restore the file, start a new run (another train.output_dir), or pass --force",
               *dir, r.data.train);
        progress.message(fmt::format("warning: resuming {} on changed data because of --force", *dir));
      }
      const auto hashes = std::make_pair(st.recipe_hash, st.data_hash);
      const int64_t saved_ranks = c.state.world_size;
      st = c.state;
      std::tie(st.recipe_hash, st.data_hash) = hashes;
      st.index = index_for_ranks(c.state, c.recipe_yaml, r, ranks, *run.train_loader, *dir);
      st.world_size = ranks;
      summary.resumed_from = *dir;
      progress.message(fmt::format("resumed from {} at step {} of {}{}", *dir, st.step, total,
                                   saved_ranks == ranks ? std::string()
                                                        : fmt::format(" (saved by {} rank(s), continued by {} from the "
                                                                      "same sample)",
                                                                      saved_ranks, ranks)));
    }
  }
  // This process's checkpoints continue the line of the checkpoint it resumed from (or start a new one): the
  // checkpoints of any other line are moved aside, never resumed or pruned.
  if (root)
    for (const auto& moved : checkpointer.start_line(summary.resumed_from))
      progress.message(fmt::format("moved a checkpoint that is not on the line this run continues to {}", moved));
  std::string last_checkpoint = summary.resumed_from;
  int64_t last_checkpoint_step = st.step;
  comm->set_recovery(recovery_advice(last_checkpoint, last_checkpoint_step));
  summary.start_step = summary.steps = st.step;
  summary.first_loss = st.first_loss;
  summary.last_loss = st.last_loss;
  summary.skipped_steps = st.skipped_steps;

  // A fresh run starts a fresh log; a resumed one continues it from its checkpoint's step. Rank 0 alone writes.
  std::optional<MetricsLog> metrics;
  if (root) {
    if (summary.resumed_from.empty()) std::filesystem::remove(run_dir + "/metrics.jsonl");
    metrics.emplace(run_dir + "/metrics.jsonl",
                    summary.resumed_from.empty() ? std::nullopt : std::optional<int64_t>(st.step));
  }
  auto log_metrics = [&](MetricRecord rec) {
    if (metrics) metrics->append(std::move(rec));
  };
  auto plot = [&] {
    if (metrics) write_loss_plot(run_dir + "/loss.svg", metrics->records(), r.name);
  };
  auto do_eval = [&](int64_t step) -> std::optional<EvalResult> {
    if (!run.eval_loader) return std::nullopt;
    auto e = evaluate(model, *run.eval_loader, r.train.eval_batches, comm.get(), objective.get());
    log_metrics({"eval", step, {{"loss", e.loss}, {"perplexity", e.perplexity}, {"tokens", double(e.tokens)}}});
    const char* units = std::string(objective->name()) == "kto" ? "records" : "pairs";
    progress.message(std::isnan(e.perplexity) ? fmt::format("eval @ step {}: {} loss {:.4f} ({} {})", step,
                                                            objective->name(), e.loss, e.tokens, units)
                                              : fmt::format("eval @ step {}: loss {:.4f}, perplexity {:.3f} ({} tokens)",
                                                            step, e.loss, e.perplexity, e.tokens));
    plot();
    return e;
  };
  auto save_checkpoint = [&] {
    if (!root) return;
    CheckpointContents c;
    c.state = st;
    for (const auto& [name, p] : run.trainable) c.trainable.emplace_back(name, p.detach().to(at::kCPU));
    c.optimizer = optimizer->state_dict();
    c.rng = rng_states(run.device);
    c.recipe_yaml = r.to_yaml();
    c.write_extra = [&](const std::string& dir) {
      // The metrics so far travel with the checkpoint (the run's own file is rewound to it on resume).
      std::filesystem::copy_file(metrics->path(), dir + "/metrics.jsonl");
      if (r.train.mode == "lora") exporting::save_peft_adapter(model, r.lora.config, r.model.path, dir);
    };
    const auto dir = checkpointer.save(c);
    progress.message(fmt::format("saved {}", dir));
  };

  // train.precompute_ref_log_probs: the reference of every row the run reads (each step's micro-batches over the
  // whole run, from its first step: the same table for a resumed run; the eval set), once, before any step.
  std::optional<PreparedReference> reference;
  if (r.train.precompute_ref_log_probs && objective->uses_reference()) {
    const int64_t rows_per_sample = run.train_loader->rows_per_sample();
    auto visit = [&](const std::function<void(const data::Batch&, int64_t)>& f) {
      int64_t e = 0, i = 0;
      for (int64_t step = 0; step < total; ++step)
        for (int64_t a = 0; a < r.train.grad_accum; ++a) {
          if (i >= micro_batches_in_epoch(r, *run.train_loader, e)) {
            if (a > 0 && r.train.max_steps <= 0) break;  // as next_step_batches
            ++e, i = 0;
          }
          f(run.train_loader->batch(e, i++), share * rows_per_sample);
        }
      if (run.eval_loader)
        for (int64_t j = 0; j < run.eval_loader->batches_per_epoch(0); ++j)
          f(run.eval_loader->batch(0, j),
            run.eval_loader->options().batch_size / ranks * run.eval_loader->rows_per_sample());  // as evaluate()
    };
    reference = prepare_reference(model, run_dir + "/" + kReferenceCacheFile, reference_fingerprint(r), visit, *comm);
    objective->set_reference_table(&reference->table);
    summary.reference_cache = reference->computed ? "computed" : "read";
    if (root && !reference->note.empty()) fmt::print(stderr, "note: {}\n", reference->note);
    progress.message(reference->message);
  }
  auto finish_reference = [&] {
    if (reference) summary.reference_misses = reference->table.misses();
  };

  // Delayed QAT: fake quantization follows the step count alone, so a resumed run switches at the same step.
  auto set_qat_for = [&](int64_t step) {
    if (run.qat.plan) qat::set_fake_quant(model, step >= run.qat_start_step);
  };
  set_qat_for(st.step);
  if (options.eval_before && summary.resumed_from.empty()) summary.eval_before = do_eval(0);
  model.train();

  // Where the data stands: (epoch, batch index). With packing an epoch's batch count depends on its order.
  int64_t& epoch = st.epoch;
  int64_t& index = st.index;
  // The next step's micro-batches (this rank's share of each), where their rows lie in their epoch (their dropout
  // masks' key), and the whole step's units and target tokens, every rank's share.
  auto next_step_batches = [&](StepTotals& totals) {
    StepBatches s;
    for (int64_t a = 0; a < r.train.grad_accum; ++a) {
      if (index >= micro_batches_in_epoch(r, *run.train_loader, epoch)) {
        if (a > 0 && r.train.max_steps <= 0) break;  // an epoch's last step is not topped up from the next epoch
        ++epoch, index = 0;
      }
      const int64_t rows_per_sample = run.train_loader->rows_per_sample();
      s.rows.push_back({lora::dropout_key(r.train.seed, epoch, 0), (index * ranks + rank) * share * rows_per_sample});
      auto global = run.train_loader->batch(epoch, index++);
      totals.units += objective->units(global);
      totals.tokens += global.target_tokens;
      s.batches.push_back(rank_share(std::move(global), rank, ranks, share, rows_per_sample));
    }
    return s;
  };
  auto last_log = Clock::now();
  int64_t tokens_since_log = 0;
  // After an update: the progress line, and every log_every steps a line of metrics.jsonl.
  auto log_step = [&](int64_t done, const StepTotals& totals, double lr, double grad_norm) {
    const double loss = totals.loss();
    st.tokens_seen += totals.tokens;
    tokens_since_log += totals.tokens;
    if (std::isnan(summary.first_loss)) summary.first_loss = st.first_loss = loss;
    summary.last_loss = st.last_loss = loss;
    st.loss_sum += loss, ++st.loss_steps;
    st.window_loss_sum += loss, ++st.window_steps;
    const double elapsed = seconds_since(start);
    const double tok_s = tokens_since_log / std::max(1e-9, seconds_since(last_log));  // every rank's tokens
    const int64_t memory = peak_memory_bytes(run.device);
    ProgressInfo info{done, total, loss, lr, tok_s, elapsed, memory, grad_norm};
    const auto values = objective->metric_values(totals.metric_sums, totals.metric_counts);
    for (size_t i = 0; i < metric_names.size(); ++i) info.metrics.emplace_back(metric_names[i], values[i]);
    progress.update(info);
    if (done % r.train.log_every == 0 || done == total || done == 1) {  // step 1: the curve starts where the loss does
      // loss_avg: the mean since the previous train line (HF's logged loss), not one step's, which may be a short
      // epoch tail; the last line also carries the run's mean (HF's train_loss).
      const double window_mean = st.window_loss_sum / static_cast<double>(st.window_steps);
      summary.recent_loss = window_mean, summary.recent_from = done - st.window_steps + 1;
      summary.mean_loss = st.loss_sum / static_cast<double>(st.loss_steps);
      st.window_loss_sum = 0, st.window_steps = 0;
      MetricRecord rec{"train",
                       done,
                       {{"loss", loss},
                        {"loss_avg", window_mean},
                        {"lr", lr},
                        {"grad_norm", grad_norm},
                        {"tokens", double(totals.tokens)},
                        {"tokens_per_s", tok_s},
                        {"elapsed_s", elapsed},
                        {"mem_bytes", double(memory)}}};
      if (done == total) rec.values.emplace_back("train_loss", summary.mean_loss);
      for (const auto& m : info.metrics) rec.values.push_back(m);
      log_metrics(std::move(rec));
      last_log = Clock::now();
      tokens_since_log = 0;
    }
  };

  for (int64_t step = st.step; step < total; ++step) {
    set_qat_for(step);
    const int64_t done = step + 1;
    const double lr = optim::learning_rate(sched, r.optim.lr, step, total);
    StepTotals totals;
    totals.metric_sums.assign(metric_names.size(), 0.0);
    totals.metric_counts.assign(metric_names.size(), 0.0);
    const auto micro = next_step_batches(totals);
    // The loss of the step is the mean over every unit (target token, pair) of all its micro-batches and ranks (not
    // a mean of per-batch means): each share's Σ loss is divided by the step's units before backward, and the
    // ranks' gradients are summed.
    const auto compute_start = Clock::now();
    const double scale = fp16 ? scaler.scale() : 1.0;
    int64_t rank_tokens = 0;
    for (size_t a = 0; a < micro.batches.size(); ++a) {
      const auto& b = micro.batches[a];
      lora::DropoutRowsScope scope(micro.rows[a]);
      objective->prepare(model, b, comm.get());
      if (objective->units(b) == 0) continue;
      auto ls = objective->loss(model, b);
      (ls.sum * (scale / static_cast<double>(std::max<int64_t>(totals.units, 1)))).backward();
      totals.loss_sum += ls.sum.item<double>();
      const auto units = static_cast<double>(objective->units(b));
      for (size_t i = 0; i < ls.metric_sums.size(); ++i) {
        totals.metric_sums[i] += ls.metric_sums[i];
        totals.metric_counts[i] += ls.metric_counts.empty() ? units : ls.metric_counts[i];
      }
      rank_tokens += b.target_tokens;
    }
    step_sync.add_compute(seconds_since(compute_start), rank_tokens);
    if (options.after_backward) options.after_backward(done, params);
    if (const auto line = step_sync.run(done, totals); !line.empty()) progress.message(line);

    const double loss = totals.loss();
    if (!std::isfinite(loss) && !fp16)
      fail("step {}: the loss is {} (lr {:.3g}); stopping before the update. Lower optim.lr, raise "
           "schedule.warmup_steps, or check the data; {}",
           done, loss, lr, recovery_advice(last_checkpoint, last_checkpoint_step));
    st.step = done;  // a skipped fp16 step is spent too (its data and learning rate); only its update is dropped
    summary.steps = done;
    if (fp16 && !scaler.unscale_and_check(params)) {
      optimizer->zero_grad();
      progress.message(fmt::format("step {}: inf/NaN gradients in fp16, step skipped; loss scale now {}", done,
                                   scaler.scale()));
      st.skipped_steps = ++summary.skipped_steps;
      st.loss_scaler = scaler.state();
    } else {
      const double grad_norm = clip_grad_norm(params, r.train.max_grad_norm);
      // fp32 and bf16 have no loss scaler to skip such a step: an update from inf/NaN gradients would poison every
      // later step and checkpoint, so the run stops before it, as for a non-finite loss.
      if (!std::isfinite(grad_norm))
        fail("step {}: the gradient norm is {} under a finite loss {:.4f} (lr {:.3g}); stopping before the update. "
             "Lower optim.lr, set train.max_grad_norm, raise schedule.warmup_steps, or check the data; {}",
             done, grad_norm, loss, lr, recovery_advice(last_checkpoint, last_checkpoint_step));
      optimizer->step(lr);
      optimizer->zero_grad();
      if (fp16) scaler.update_after_good_step();
      st.loss_scaler = fp16 ? scaler.state() : std::vector<double>{};
      log_step(done, totals, lr, grad_norm);
      if (options.on_step) options.on_step(done, loss);
    }
    // Evals, saves and a requested stop follow the step count, whether or not this step's update was skipped.
    if (r.train.eval_every > 0 && done % r.train.eval_every == 0 && done != total) {
      do_eval(done);
      model.train();
    }
    if ((r.train.save_every > 0 && done % r.train.save_every == 0) || done == total) {
      save_checkpoint();
      // The others wait for the save in the store, not in a collective: a save may take longer than its timeout.
      comm->share_from_root(fmt::format("saved/{}", done), "", long_wait);
      last_checkpoint = fmt::format("{}/step-{:08d}", checkpointer.directory(), done), last_checkpoint_step = done;
      comm->set_recovery(recovery_advice(last_checkpoint, last_checkpoint_step));
    }
    if (options.stop_after_step > 0 && done >= options.stop_after_step) {
      progress.finish();
      finish_reference();
      summary.tokens = st.tokens_seen;
      summary.seconds = seconds_since(start);
      return summary;
    }
  }
  progress.finish();
  summary.tokens = st.tokens_seen;
  if (st.loss_steps > 0) summary.mean_loss = st.loss_sum / static_cast<double>(st.loss_steps);
  summary.eval_after = do_eval(summary.steps);
  finish_reference();
  plot();
  const auto out_dir = run_dir + (r.train.mode == "lora" ? "/adapter" : "/model");
  if (root) save_result(run, out_dir);
  (r.train.mode == "lora" ? summary.adapter_dir : summary.model_dir) = out_dir;
  summary.seconds = seconds_since(start);
  return summary;
}

}  // namespace qtune::train
