// qtune bench SUBJECT: measurements of the library's own kernels, printed as a table (docs/PERFORMANCE.md
// records them). Subjects are sub-subcommands, so each brings its own options; `dequant` is the first.
//
// qtune bench dequant: one weight (default 4096 x 4096, a 7B attention projection) dequantized from NF4 (block
// 64, with and without double quant), int8 and some of the GGUF block types a weight can be kept in (Q4_1, Q8_0, Q4_K,
// Q6_K; and dequantize_ggml, the float32 reference, for Q4_1), beside out.copy_(src) of a tensor of the output's size and dtype,
// the memory-bandwidth bound a dequantize cannot beat. GB/s counts bytes read plus bytes written. On the CPU the
// kernel writes into a preallocated output, as the copy does, so the ratio compares like with like; the API
// column adds what callers pay for dequantize_*()'s fresh output (a large CPU allocation is a fresh mmap, whose
// pages fault in on first write). On a GPU the caching allocator makes that free, and both columns are the API.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "commands.h"
#include "qtune/kernels/dequant.h"
#include "qtune/kernels/dequant_ggml.h"
#include "qtune/kernels/dequant_int8.h"
#include "qtune/quant/ggml_weight.h"
#include "qtune/quant/gguf_blocks.h"
#include "qtune/quant/codebook.h"
#include "qtune/util/error.h"

namespace qtune::cli {
namespace {

struct DequantBenchArgs {
  int64_t rows = 4096;
  int64_t cols = 4096;
  int threads = 0;  // 0: LibTorch's default (one per core)
  int iters = 20;
  std::string device = "auto";
};

kernels::DequantInt8Params params_of(const quant::Int8State& s) {
  return {s.codes.data_ptr<int8_t>(), s.row_absmax.data_ptr<float>(), s.rows(), s.cols()};
}

int64_t bytes_of(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

int64_t input_bytes(const quant::Quant4State& s) {
  int64_t bytes = bytes_of(s.packed) + bytes_of(s.code) + bytes_of(s.absmax);
  if (s.nested) bytes += bytes_of(s.nested->codes) + bytes_of(s.nested->absmax) + bytes_of(s.nested->map);
  return bytes;
}

int64_t input_bytes(const quant::Int8State& s) { return bytes_of(s.codes) + bytes_of(s.row_absmax); }

// Seconds per call of each of `fns`. CPU: the median of `iters` calls, measured in interleaved rounds (copy,
// kernel, API, copy, ...) so that a neighbour's burst on a shared machine hits all of them alike. CUDA: `iters`
// launches between two synchronisations, divided by `iters` (a synchronisation per call would cost as much as a
// short kernel).
std::vector<double> seconds_per_call(const std::vector<std::function<void()>>& fns, int iters, bool cuda) {
  using Clock = std::chrono::steady_clock;
  for (const auto& fn : fns)
    for (int i = 0; i < 2; ++i) fn();  // warm up: first-touch pages, allocator caches, CUDA module load
  std::vector<double> result;
  if (cuda) {
    for (const auto& fn : fns) {
      torch::cuda::synchronize();
      const auto start = Clock::now();
      for (int i = 0; i < iters; ++i) fn();
      torch::cuda::synchronize();
      result.push_back(std::chrono::duration<double>(Clock::now() - start).count() / iters);
    }
    return result;
  }
  std::vector<std::vector<double>> times(fns.size());
  for (int i = 0; i < iters; ++i)
    for (size_t f = 0; f < fns.size(); ++f) {
      const auto start = Clock::now();
      fns[f]();
      times[f].push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
  for (auto& t : times) {
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    result.push_back(t[t.size() / 2]);
  }
  return result;
}

std::string dtype_name(at::ScalarType t) { return t == at::kFloat ? "fp32" : t == at::kBFloat16 ? "bf16" : "fp16"; }

void bench_device(const DequantBenchArgs& args, const at::Device& device) {
  const bool cuda = device.is_cuda();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);
  const auto nf4_dq = quant::random_quant4_state({args.rows, args.cols}, 64, quant::Format4::NF4, true, gen).to(device);
  const auto nf4 = quant::random_quant4_state({args.rows, args.cols}, 64, quant::Format4::NF4, false, gen).to(device);
  const auto int8 = quant::quantize_int8_rowwise((at::randn({args.rows, args.cols}, gen) * 0.02).to(device));
  // Some of the GGUF block types a weight can be kept in, where the columns hold whole blocks (K-quants: 256).
  std::vector<std::pair<quant::GgmlType, at::Tensor>> ggml;
  for (auto type : {quant::GgmlType::Q4_1, quant::GgmlType::Q8_0, quant::GgmlType::Q4_K, quant::GgmlType::Q6_K})
    if (args.cols % quant::ggml_type_info(type).block_elems == 0)
      ggml.emplace_back(type, quant::random_ggml_blocks(type, args.rows, args.cols, gen, 0.01).to(device));

  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const auto opts = at::TensorOptions().dtype(dtype).device(device);
    auto out = at::empty({args.rows, args.cols}, opts);
    const auto src = at::rand({args.rows, args.cols}, gen).to(opts);
    const std::function<void()> copy = [&] { out.copy_(src); };

    // On the GPU the API is the kernel (see the top of the file): measured once.
    auto row = [&](const std::string& name, int64_t in_bytes, std::function<void()> kernel, std::function<void()> api) {
      const auto s = cuda ? seconds_per_call({copy, api}, args.iters, true)
                          : seconds_per_call({copy, kernel, api}, args.iters, false);
      const double copy_s = s[0], kernel_s = s[1], api_s = s.back();
      const double copy_gbs = 2.0 * bytes_of(out) / copy_s / 1e9;
      const double gbs = static_cast<double>(in_bytes + bytes_of(out)) / kernel_s / 1e9;
      fmt::print("{:<6} {:<13} {:<5} {:>10.3f} {:>7.1f} {:>10.3f} {:>7.1f} {:>7.0f}% {:>10.3f}\n", device.str(), name,
                 dtype_name(dtype), kernel_s * 1e3, gbs, copy_s * 1e3, copy_gbs, 100.0 * gbs / copy_gbs, api_s * 1e3);
    };
    for (const auto* state : {&nf4_dq, &nf4}) {
      const auto params = kernels::params_of(*state);
      row(state->nested ? "nf4 b64 dq" : "nf4 b64", input_bytes(*state),
          [&] { kernels::dequantize_4bit_cpu(params, out); }, [&] { kernels::dequantize_4bit(*state, dtype); });
    }
    const auto params = params_of(int8);
    row("int8 rowwise", input_bytes(int8), [&] { kernels::dequantize_int8_cpu(params, out); },
        [&] { kernels::dequantize_int8(int8, dtype); });
    for (const auto& [type, blocks] : ggml) {
      kernels::DequantGgmlParams p{type, blocks.data_ptr<uint8_t>(), args.rows, args.cols, blocks.size(1)};
      row(std::string("gguf ") + quant::ggml_type_info(type).name, bytes_of(blocks),
          [&] { kernels::dequantize_ggml_cpu(p, out); }, [&] { kernels::dequantize_ggml_rows(type, blocks, args.cols, dtype); });
    }
    if (!cuda && !ggml.empty()) {
      // gguf_blocks.h's dequantize_ggml (what GgufFile::dequantize runs): fp32 only, so a cast for other dtypes.
      const auto& [type, blocks] = ggml.front();
      auto reference = [&, type = type, blocks = blocks] {
        auto w = quant::dequantize_ggml(type, blocks.data_ptr<uint8_t>(), args.rows * args.cols);
        if (dtype != at::kFloat) w = w.to(dtype);
      };
      row(std::string("ref ") + quant::ggml_type_info(type).name, bytes_of(blocks), reference, reference);
    }
  }
}

int run_bench_dequant(const DequantBenchArgs& args) {
  const bool gpu = kernels::cuda_kernels_built() && torch::cuda::is_available();
  if (args.device == "cuda" && !gpu)
    fail("bench dequant: --device cuda, but {}", kernels::cuda_kernels_built() ? "no CUDA GPU is usable here"
                                                                                : "qtune was built without CUDA kernels");
  if (args.threads > 0) at::set_num_threads(args.threads);
  std::vector<at::Device> devices;
  if (args.device != "cuda") devices.emplace_back(at::kCPU);
  if (args.device == "cuda" || (args.device == "auto" && gpu)) devices.emplace_back(at::kCUDA);

  fmt::print("qtune bench dequant: {} x {} weight ({:.1f}M values), cpu threads {}, {} calls per figure\n", args.rows,
             args.cols, args.rows * args.cols / 1e6, at::get_num_threads(), args.iters);
  fmt::print("time: cpu median per call, cuda mean of back-to-back calls; GB/s: bytes read + written / time;\n"
             "kernel: into a preallocated output (cpu); copy: out.copy_(src), same size and dtype; "
             "API: dequantize_*() with its fresh output\n\n");
  fmt::print("{:<6} {:<13} {:<5} {:>10} {:>7} {:>10} {:>7} {:>8} {:>10}\n", "device", "format", "out", "kernel ms",
             "GB/s", "copy ms", "GB/s", "of copy", "API ms");
  for (const auto& device : devices) bench_device(args, device);
  return 0;
}

}  // namespace

void add_bench(CLI::App& app, Action& action) {
  auto* bench = app.add_subcommand("bench", "Measure qtune (subjects: dequant, train, decode, tokenize)");
  // Subjects are subcommands. Words that name none are kept as extras, so the error can name them and list the
  // subjects (CLI11 alone would say only "A subcommand is required").
  bench->require_subcommand(0, 1);
  bench->allow_extras();
  bench->callback([&action, bench] {
    if (!bench->get_subcommands().empty()) return;
    const auto extras = bench->remaining();
    action = [extras]() -> int {
      if (extras.empty()) fail("bench: name a subject to measure: dequant, train, decode or tokenize");
      fail("bench: unknown subject '{}': the subjects are: dequant, train, decode, tokenize", fmt::join(extras, " "));
    };
  });

  auto* dequant = bench->add_subcommand(
      "dequant",
      "Dequantization speed (NF4, NF4 + double quant, int8, GGUF blocks) against the memory-bandwidth bound of a copy");
  dequant->allow_extras(false);  // subcommands inherit allow_extras: a subject rejects what it does not know
  auto args = std::make_shared<DequantBenchArgs>();
  dequant->add_option("--rows", args->rows, "Weight rows (output features)")->capture_default_str()->check(CLI::PositiveNumber);
  dequant->add_option("--cols", args->cols, "Weight columns (input features)")->capture_default_str()->check(CLI::PositiveNumber);
  dequant->add_option("--threads", args->threads, "CPU threads (default: one per core)")->check(CLI::NonNegativeNumber);
  dequant->add_option("--iters", args->iters, "Timed calls per figure")->capture_default_str()->check(CLI::PositiveNumber);
  dequant->add_option("--device", args->device, "cpu, cuda, or auto (the CPU, and the GPU when one is usable)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  dequant->callback([&action, args] { action = [args] { return run_bench_dequant(*args); }; });
  add_bench_train(*bench, action);
  add_bench_tokenize(*bench, action);
  add_bench_template(*bench, action);
}

}  // namespace qtune::cli
