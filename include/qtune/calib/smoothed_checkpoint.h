#pragma once
// The one place a SmoothQuant run writes its model: every tensor passes through add() in checkpoint order (the
// embeddings, each decoder layer's norms and linears, the final norm and lm_head), then finish() closes the directory.
// Today it writes the smoothed model dense — a Hugging Face directory in `dtype` that transformers and qtune load as
// they load the source (its config.json, generation_config.json and tokenizer files) — plus smoothquant.json, the
// record of the smoothing (α per layer, the mappings, the calibration tokens, the W8A8 block errors). A W8A8 checkpoint
// (int8 weights per channel, compressed-tensors) is written by changing this class alone (io::layer_linears names the
// tensors that are linear weights).
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>

#include "qtune/calib/smoothquant.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/sharded_writer.h"

namespace qtune::calib {

class SmoothedCheckpointWriter {
 public:
  // `dir`: the (temporary) output directory, which exists; `model_dir`: the source, for its model files.
  SmoothedCheckpointWriter(std::string dir, std::string model_dir, io::ModelConfig config, at::ScalarType dtype);
  // `value`: fp32 (or the source's dtype), as the smoothed model holds it.
  void add(const std::string& name, const at::Tensor& value);
  // Writes the shards, the model files and the record; returns the checkpoint's bytes.
  int64_t finish(const SmoothQuantOptions& options, const SmoothQuantReport& record);

 private:
  std::string dir_, model_dir_;
  io::ModelConfig config_;
  at::ScalarType dtype_;
  io::ShardedWriter writer_;
};

}  // namespace qtune::calib
