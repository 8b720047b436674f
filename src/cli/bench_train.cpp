// qtune bench train: the QLoRA training step on a random-weight model of a given shape (a config.json: the presets
// in configs/models/), timed after warm-up, with the peak memory and `qtune plan`'s estimate beside it; the peer
// (transformers + PEFT, scripts/bench_train_peer.py) runs the same shape and settings, and scripts/bench_train.py
// prints both side by side.
// qtune bench decode: batch-1 generation tokens/s (prefill, then one token per step with the KV cache).
//
// The step is the trainer's: hidden states, chunked cross-entropy, backward through the dequantizing matmuls (and the
// checkpointed layers), the loss read back to the host, global-norm clipping, the optimizer step.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <chrono>

#include "commands.h"
#include "qtune/eval/generate.h"
#include "qtune/lora/inject.h"
#include "qtune/optim/optimizer.h"
#include "qtune/train/chunked_loss.h"
#include "qtune/train/memory_estimate.h"
#include "qtune/train/precision.h"
#include "qtune/util/cpu_share.h"
#include "qtune/util/device.h"
#include "qtune/util/error.h"
#include "qtune/util/memory.h"
#include "qtune/util/omp_wait.h"
#include "op_profile.h"
#include "random_model.h"

namespace qtune::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct ShapeArgs {
  std::string config;  // a config.json or a directory holding one
  std::string model;   // or a real model (directory or .gguf): its weights instead of random ones
  std::string base = "nf4";
  std::string device = "auto", dtype = "auto";
  int threads = 0;
  bool json = false;
};

void add_shape_options(CLI::App& cmd, ShapeArgs& a) {
  auto* config = cmd.add_option("--config", a.config,
                                 "The model shape: a config.json or a directory holding one (configs/models/)");
  auto* model = cmd.add_option("--model", a.model,
                               "Or a real model (a Hugging Face directory or a .gguf), loaded and quantized as qtune "
                               "train loads it");
  config->excludes(model);
  model->excludes(config);
  cmd.add_option("--base", a.base,
                 "How the projections are stored: nf4 (with double quant), int8, w8a8 (int8 weights and int8 inputs, "
                 "integer matmul) or dense")
      ->capture_default_str()
      ->check(CLI::IsMember({"nf4", "int8", "w8a8", "dense"}));
  cmd.add_option("--device", a.device, "auto | cpu | cuda[:N]")->capture_default_str();
  cmd.add_option("--dtype", a.dtype, "Compute dtype: auto (train: as train.precision auto; decode: as --dtype auto) | fp32 | bf16 | fp16")
      ->capture_default_str();
  cmd.add_option("--threads", a.threads, "CPU threads (default: one per core)")->check(CLI::NonNegativeNumber);
  cmd.add_flag("--json", a.json, "Print one JSON object instead of text");
}

const std::string& shape_label(const ShapeArgs& a) { return a.model.empty() ? a.config : a.model; }

void synchronize(at::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct TrainBenchArgs {
  ShapeArgs shape;
  int64_t batch = 4, seq = 256, steps = 5, warmup = 2;
  int64_t r = 16;
  double alpha = 32;
  std::string optim = "adamw";
  bool checkpointing = true;
  int64_t profile = 0;  // > 0: after the timed steps, profile one more step and print this many operators
  int64_t packed = 1;   // samples per row: > 1 passes segment and position ids, as the trainer's packed rows do
  int64_t checkpoint_layers = -1;  // with checkpointing: the first N layers recompute (-1: all)
};

void warn_if_cores_shared() {
  if (const auto w = cpu_oversubscription_warning(at::get_num_threads()); !w.empty()) fmt::print(stderr, "{}\n", w);
}

int run_bench_train(const TrainBenchArgs& a) {
  if (a.shape.threads > 0) at::set_num_threads(a.shape.threads);
  warn_if_cores_shared();
  if (a.shape.config.empty() == a.shape.model.empty()) fail("qtune bench train: give --config SHAPE or --model PATH");
  const auto config = io::ModelConfig::load(a.shape.model.empty() ? a.shape.config : a.shape.model);
  const auto device = resolve_device(a.shape.device);
  // auto: what train.precision auto trains in (bf16 on a CPU with AVX512-BF16, as on a GPU).
  const auto dtype = a.shape.dtype == "auto" ? train::compute_dtype("auto", device, config.hidden_size) : resolve_dtype(a.shape.dtype, device);
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  if (a.seq > config.max_position_embeddings)
    fail("--seq {} is longer than the model's {} positions", a.seq, config.max_position_embeddings);

  lora::LoraConfig lc;
  lc.r = a.r;
  lc.alpha = a.alpha;
  lc.dropout = 0;
  const int64_t rss_before_build = current_rss_bytes();
  const auto built_at = Clock::now();
  auto m = a.shape.model.empty() ? random_model(config, a.shape.base, options, &lc, 1)
                                 : loaded_model(a.shape.model, a.shape.base, options, &lc, 1);
  auto& model = *m.model;
  model.train();
  model.set_gradient_checkpointing(a.checkpointing, a.checkpoint_layers);
  const auto trainable = lora::trainable_parameters(model);
  std::vector<at::Tensor> params;
  int64_t trainable_params = 0;
  for (const auto& [name, p] : trainable) params.push_back(p), trainable_params += p.numel();
  auto optimizer = optim::make_optimizer(a.optim, trainable, optim::AdamWOptions{1e-4, 0.9, 0.999, 1e-8, 0.0});
  synchronize(device);
  const double build_s = seconds_since(built_at);
  // The load's peak (building 4-bit weights holds a layer's temporaries) apart from the steps' peak, which is what
  // `qtune plan` estimates.
  const int64_t load_peak = peak_memory_bytes(device);
  const int64_t rss_after_build = current_rss_bytes();
  reset_peak_memory(device);

  auto ids = at::randint(config.vocab_size, {a.batch, a.seq}, at::TensorOptions().dtype(at::kLong).device(device));
  auto targets = at::full({a.batch, a.seq}, -100, ids.options());
  targets.narrow(1, 0, a.seq - 1).copy_(ids.narrow(1, 1, a.seq - 1));
  nn::ForwardOptions fo;
  if (a.packed > 1) {
    // Equal segments per row, positions restarting in each: the trainer's packed rows.
    const int64_t len = (a.seq + a.packed - 1) / a.packed;
    auto pos = at::arange(a.seq, ids.options());
    fo.segment_ids = at::floor_divide(pos, len).expand({a.batch, a.seq}).contiguous();
    fo.position_ids = at::remainder(pos, len).expand({a.batch, a.seq}).contiguous();
    targets.masked_fill_(at::remainder(pos + 1, len).eq(0).expand({a.batch, a.seq}), -100);  // no target across
  }
  double last_loss = NAN;
  auto step = [&] {
    auto hidden = model.hidden_states(ids, fo);
    auto ls = train::chunked_cross_entropy(hidden, model.lm_head_weight(), targets, 0,
                                           model.config().final_logit_softcapping.value_or(0));
    (ls.sum / static_cast<double>(ls.tokens)).backward();
    last_loss = ls.sum.item<double>() / static_cast<double>(ls.tokens);  // the trainer reads it back each step too
    train::clip_grad_norm(params, 1.0);
    optimizer->step(1e-4);
    optimizer->zero_grad();
  };
  for (int64_t i = 0; i < a.warmup; ++i) step();
  synchronize(device);
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < a.steps; ++i) step();
  synchronize(device);
  const double secs = seconds_since(t0);
  const double tokens_per_s = static_cast<double>(a.batch * a.seq * a.steps) / secs;
  const int64_t peak = peak_memory_bytes(device);
  if (a.profile > 0 && !a.shape.json)
    print_op_profile([&] { step(), synchronize(device); }, 1, a.profile, stdout);

  // What `qtune plan` says for the same run, beside what it took.
  train::Recipe recipe;
  recipe.train.batch_size = a.batch;
  recipe.data.max_seq_len = a.seq;
  recipe.train.gradient_checkpointing = a.checkpointing;
  recipe.optim.name = a.optim;
  recipe.lora.config = lc;
  quant::QuantPlan plan;
  plan.base.format = a.shape.base == "int8"   ? quant::WeightFormat::Int8
                     : a.shape.base == "w8a8"  ? quant::WeightFormat::W8A8
                     : a.shape.base == "dense" ? quant::WeightFormat::Dense
                                               : quant::WeightFormat::NF4;
  auto m_est = train::estimate_memory(config, recipe, plan, dtype, device.is_cuda());
  if (!device.is_cuda()) m_est.runtime = rss_before_build;
  const auto estimate = train::total_with(
      m_est, !a.checkpointing ? 0 : a.checkpoint_layers < 0 ? config.num_hidden_layers : a.checkpoint_layers);

  nlohmann::json j = {{"engine", "qtune"},
                      {"config", shape_label(a.shape)},
                      {"base", a.shape.base},
                      {"device", device.str()},
                      {"dtype", dtype_label(dtype)},
                      {"batch", a.batch},
                      {"seq", a.seq},
                      {"steps", a.steps},
                      {"warmup", a.warmup},
                      {"r", a.r},
                      {"alpha", a.alpha},
                      {"checkpointing", a.checkpointing},
                      {"packed", a.packed},
                      {"checkpoint_layers", a.checkpoint_layers},
                      {"threads", at::get_num_threads()},
                      {"omp_wait", omp_wait_setting()},
                      {"trainable_params", trainable_params},
                      {"tokens_per_s", tokens_per_s},
                      {"seconds_per_step", secs / static_cast<double>(a.steps)},
                      {"peak_bytes", peak},
                      {"load_peak_bytes", load_peak},
                      {"rss_before_build_bytes", rss_before_build},  // the process before any model: LibTorch's
                      {"rss_after_build_bytes", rss_after_build},    // ... and with the model built
                      {"peak_kind", device.is_cuda() ? "cuda max allocated" : "process peak RSS"},
                      {"plan_estimate_bytes", estimate},
                      {"build_seconds", build_s},
                      {"last_loss", last_loss}};
  if (a.shape.json) {
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("qtune bench train: {} ({} layers, hidden {}), {} base, {} on {}, {} x {} tokens, LoRA r {} alpha {} on "
             "every projection ({} trainable), {}, checkpointing {}\n",
             shape_label(a.shape), config.num_hidden_layers, config.hidden_size, a.shape.base, dtype_label(dtype),
             device.str(), a.batch, a.seq, a.r, a.alpha, trainable_params, a.optim, a.checkpointing ? "on" : "off");
  fmt::print("{:.1f} tokens/s ({:.3f} s/step over {} steps after {} warm-up), peak {} ({}; {} while loading), plan estimate {}; loss "
             "{:.3f}; model built in {:.1f}s\n",
             tokens_per_s, secs / static_cast<double>(a.steps), a.steps, a.warmup, format_bytes(double(peak)),
             j["peak_kind"].get<std::string>(), format_bytes(double(load_peak)), format_bytes(double(estimate)), last_loss, build_s);
  return 0;
}

struct DecodeBenchArgs {
  ShapeArgs shape;
  int64_t prompt = 128, new_tokens = 128;
};

int run_bench_decode(const DecodeBenchArgs& a) {
  if (a.shape.threads > 0) at::set_num_threads(a.shape.threads);
  warn_if_cores_shared();
  if (a.shape.config.empty() == a.shape.model.empty()) fail("qtune bench decode: give --config SHAPE or --model PATH");
  const auto config = io::ModelConfig::load(shape_label(a.shape));
  const auto device = resolve_device(a.shape.device);
  const auto dtype = resolve_dtype(a.shape.dtype, device);
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  auto m = a.shape.model.empty() ? random_model(config, a.shape.base, options, nullptr, 1)
                                 : loaded_model(a.shape.model, a.shape.base, options, nullptr, 1);
  m.model->eval();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto prompt_t = at::randint(config.vocab_size, {a.prompt}, gen, at::kLong).contiguous();
  const std::vector<int64_t> prompt(prompt_t.data_ptr<int64_t>(), prompt_t.data_ptr<int64_t>() + a.prompt);
  eval::GenerateOptions o;
  o.max_new_tokens = a.new_tokens;
  eval::generate(*m.model, prompt, o);  // warm-up: kernels, allocator
  synchronize(device);
  const auto r = eval::generate(*m.model, prompt, o);
  synchronize(device);
  nlohmann::json j = {{"engine", "qtune"},          {"config", shape_label(a.shape)},
                      {"base", a.shape.base},       {"device", device.str()},
                      {"dtype", dtype_label(dtype)}, {"prompt", a.prompt},
                      {"new_tokens", static_cast<int64_t>(r.tokens.size())},
                      {"prefill_seconds", r.prefill_seconds},
                      {"decode_tokens_per_s", r.decode_tokens_per_second()},
                      {"peak_bytes", peak_memory_bytes(device)}};
  if (a.shape.json)
    fmt::print("{}\n", j.dump());
  else
    fmt::print("qtune bench decode: {} {} base, {} on {}: prompt {} tokens in {:.3f}s, {:.1f} tokens/s decoding {} "
               "tokens, peak {}\n",
               shape_label(a.shape), a.shape.base, dtype_label(dtype), device.str(), a.prompt, r.prefill_seconds,
               r.decode_tokens_per_second(), r.tokens.size(), format_bytes(double(peak_memory_bytes(device))));
  return 0;
}

}  // namespace

void add_bench_train(CLI::App& bench, Action& action) {
  auto* train = bench.add_subcommand(
      "train", "The QLoRA training step on a random-weight model of a given shape: tokens/s, peak memory, plan estimate");
  train->allow_extras(false);
  auto args = std::make_shared<TrainBenchArgs>();
  add_shape_options(*train, args->shape);
  train->add_option("--batch", args->batch, "Sequences per step")->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--seq", args->seq, "Tokens per sequence")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  train->add_option("--steps", args->steps, "Timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--warmup", args->warmup, "Untimed steps first")->capture_default_str()->check(CLI::NonNegativeNumber);
  train->add_option("--r", args->r, "LoRA rank")->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--alpha", args->alpha, "LoRA alpha")->capture_default_str();
  train->add_option("--optim", args->optim, "adamw | paged_adamw | adamw_8bit | paged_adamw_8bit")->capture_default_str();
  train->add_option("--checkpointing", args->checkpointing, "Gradient checkpointing per decoder layer (true/false)")
      ->capture_default_str();
  train->add_option("--checkpoint-layers", args->checkpoint_layers,
                    "With checkpointing: only the first N layers recompute (-1: all)")
      ->capture_default_str();
  train->add_option("--packed", args->packed, "Samples per row (segment ids, as the trainer packs; 1: none)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--profile", args->profile, "Then profile one more step and print its N costliest operators")
      ->check(CLI::NonNegativeNumber);
  train->callback([&action, args] { action = [args] { return run_bench_train(*args); }; });

  auto* decode = bench.add_subcommand("decode", "Batch-1 generation speed on a random-weight model of a given shape");
  decode->allow_extras(false);
  auto dargs = std::make_shared<DecodeBenchArgs>();
  add_shape_options(*decode, dargs->shape);
  decode->add_option("--prompt", dargs->prompt, "Prompt tokens")->capture_default_str()->check(CLI::PositiveNumber);
  decode->add_option("--new-tokens", dargs->new_tokens, "Tokens to generate")->capture_default_str()->check(CLI::PositiveNumber);
  decode->callback([&action, dargs] { action = [dargs] { return run_bench_decode(*dargs); }; });
}

}  // namespace qtune::cli
