#pragma once
// What every calibrated quantizer writes besides its tensors, and how: a directory that appears complete or not
// at all, with config.json (the source's, plus quantization_config and torch_dtype), generation_config.json and
// the tokenizer files, so that transformers and qtune load it as they load the source.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "qtune/io/hf_config.h"
#include "qtune/io/sharded_writer.h"
#include "qtune/io/weight_source.h"

namespace qtune::calib {

// Runs `write(tmp)` into `out_dir`.tmp and renames it to `out_dir` (which must not exist); on any failure the
// temporary directory is removed and the error propagates.
void write_directory_atomically(const std::string& out_dir, const std::function<void(const std::string& tmp)>& write);

// The tensors every driver writes unquantized in `dtype` after the decoder layers (the final norm, and lm_head unless
// tied to the embeddings); then the writer's shards are finished. Returns the checkpoint's bytes.
int64_t finish_with_head(io::ShardedWriter& writer, const io::WeightSource& weights, const io::ModelConfig& config,
                         at::ScalarType dtype);

// Bits per weight of the quantized linears: their stored bytes over their parameters.
inline double bits_per_weight(int64_t bytes, int64_t parameters) {
  return parameters > 0 ? 8.0 * static_cast<double>(bytes) / static_cast<double>(parameters) : 0;
}

// config.json, generation_config.json and the tokenizer files of `model_dir` into `dir` (a null quantization_config:
// none, a dense model).
void write_model_files(const std::string& model_dir, const io::ModelConfig& config,
                       const nlohmann::json& quantization_config, at::ScalarType dtype, const std::string& dir);

}  // namespace qtune::calib
