#pragma once
// Writes a W8A8 checkpoint in compressed-tensors' layout (quant/compressed_tensors_format.h), as llm-compressor saves
// one: a Hugging Face directory whose linears are int8 codes with per-channel scales and whose config.json carries the
// W8A8 quantization_config. vLLM and SGLang serve it with int8 activations; transformers loads it through
// compressed-tensors. Tensors are added one at a time and written shard by shard (io::ShardedWriter), so a model is
// never held whole; the directory appears complete or not at all (a temporary sibling renamed by finish()).
// Used by `qtune export --merged DIR --quantize w8a8` and by SmoothQuant's calibration, which both end with a model's
// dense tensors and each linear's int8 codes and scales.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_writer.h"
#include "qtune/quant/w8a8.h"

namespace qtune::exporting {

struct W8A8CheckpointOptions {
  // The dense tensors' dtype (embeddings, norms, lm_head, biases, linears kept dense); codes are int8 and scales fp32
  // whatever it is (vLLM keeps the scales in fp32; rounding them would change what was trained against).
  at::ScalarType dtype = at::kBFloat16;
  int64_t max_shard_bytes = int64_t{2} << 30;
  // The base model's directory (or .gguf): its generation_config.json (stop ids, sampling defaults) is copied.
  std::string source;
};

class W8A8CheckpointWriter {
 public:
  // `dir` must not exist.
  W8A8CheckpointWriter(std::string dir, W8A8CheckpointOptions options);
  ~W8A8CheckpointWriter();  // removes the temporary directory when finish() did not run
  W8A8CheckpointWriter(const W8A8CheckpointWriter&) = delete;
  W8A8CheckpointWriter& operator=(const W8A8CheckpointWriter&) = delete;

  // A tensor that is not a linear's weight (embedding, norm, lm_head, bias), written in options.dtype.
  void add_dense(const std::string& name, const at::Tensor& value);
  // A decoder linear (`module_name` + ".weight") left unquantized: written in options.dtype and named in the config's
  // ignore list, so that readers do not look for its scales.
  void add_dense_linear(const std::string& module_name, const at::Tensor& weight);
  // A linear stored as int8 codes and per-channel scales.
  void add_linear(const std::string& module_name, const quant::W8A8State& state);
  // Writes config.json (`config`, the model's config.json object, with the W8A8 quantization_config and torch_dtype)
  // and generation_config.json, and renames the directory into place.
  io::ShardedWriter::Result finish(nlohmann::json config);

 private:
  std::string dir_, tmp_;
  W8A8CheckpointOptions options_;
  io::ShardedWriter writer_;
  std::vector<std::string> ignore_{"lm_head"};
  int64_t linears_ = 0;
  bool finished_ = false;
};

// The whole checkpoint in one call: every tensor of `dense` as add_dense, every (module name, codes and scales) of
// `linears` as add_linear, then finish(config).
io::ShardedWriter::Result save_w8a8_checkpoint(const std::string& dir, const nlohmann::json& config,
                                               const io::NamedTensors& dense,
                                               const std::vector<std::pair<std::string, quant::W8A8State>>& linears,
                                               const W8A8CheckpointOptions& options);

}  // namespace qtune::exporting
