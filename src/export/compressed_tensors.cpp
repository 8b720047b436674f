#include "qtune/export/compressed_tensors.h"

#include <filesystem>

#include "qtune/io/atomic_file.h"
#include "qtune/io/generation_config.h"
#include "qtune/quant/compressed_tensors_format.h"
#include "qtune/util/error.h"
#include "qtune/util/remove_tree.h"

namespace qtune::exporting {
namespace {

namespace fs = std::filesystem;

std::string dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

std::string make_tmp(const std::string& dir) {
  if (fs::exists(dir)) fail("W8A8 checkpoint: '{}' exists; choose a new directory (nothing was overwritten)", dir);
  const auto tmp = dir + ".tmp";
  remove_tree(tmp);
  fs::create_directories(tmp);
  return tmp;
}

}  // namespace

W8A8CheckpointWriter::W8A8CheckpointWriter(std::string dir, W8A8CheckpointOptions options)
    : dir_(std::move(dir)), tmp_(make_tmp(dir_)), options_(std::move(options)), writer_(tmp_, options_.max_shard_bytes) {
  if (options_.dtype != at::kFloat && options_.dtype != at::kBFloat16 && options_.dtype != at::kHalf)
    fail("W8A8 checkpoint: the dense tensors' dtype must be fp32, bf16 or fp16");
}

W8A8CheckpointWriter::~W8A8CheckpointWriter() {
  if (!finished_) {
    try {
      remove_tree(tmp_);
    } catch (...) {  // a destructor must not throw; a stale .tmp is removed by the next writer of the same name
    }
  }
}

void W8A8CheckpointWriter::add_dense(const std::string& name, const at::Tensor& value) {
  writer_.add(name, value.detach().to(at::kCPU).to(options_.dtype));
}

void W8A8CheckpointWriter::add_dense_linear(const std::string& module_name, const at::Tensor& weight) {
  add_dense(module_name + ".weight", weight);
  if (module_name != "lm_head") ignore_.push_back(module_name);
}

void W8A8CheckpointWriter::add_linear(const std::string& module_name, const quant::W8A8State& state) {
  state.validate(module_name);
  if (module_name == "lm_head")
    fail("W8A8 checkpoint: lm_head stays dense (llm-compressor's W8A8 ignores it, and so do the runtimes)");
  io::NamedTensors parts;
  quant::append_compressed_w8a8(parts, module_name, {state.codes.to(at::kCPU), state.scale.to(at::kCPU)});
  for (const auto& [name, t] : parts) writer_.add(name, t);
  ++linears_;
}

io::ShardedWriter::Result W8A8CheckpointWriter::finish(nlohmann::json config) {
  if (finished_) fail("W8A8 checkpoint: '{}' was already finished", dir_);
  if (linears_ == 0) fail("W8A8 checkpoint: no linear was quantized; '{}' would be a dense model", dir_);
  const auto result = writer_.finish();
  config.erase("quantization_config");
  config["torch_dtype"] = dtype_name(options_.dtype);
  config["quantization_config"] = quant::CompressedTensorsConfig::w8a8_json(ignore_);
  io::write_text_atomically((fs::path(tmp_) / "config.json").string(), config.dump(2) + "\n");
  io::write_generation_config(options_.source, config, tmp_);
  fs::rename(tmp_, dir_);
  finished_ = true;
  return result;
}

io::ShardedWriter::Result save_w8a8_checkpoint(const std::string& dir, const nlohmann::json& config,
                                               const io::NamedTensors& dense,
                                               const std::vector<std::pair<std::string, quant::W8A8State>>& linears,
                                               const W8A8CheckpointOptions& options) {
  W8A8CheckpointWriter w(dir, options);
  for (const auto& [name, t] : dense) w.add_dense(name, t);
  for (const auto& [module, state] : linears) w.add_linear(module, state);
  return w.finish(config);
}

}  // namespace qtune::exporting
