#pragma once
// What every calibrated quantizer writes besides its tensors, and how: a directory that appears complete or not
// at all, with config.json (the source's, plus quantization_config and torch_dtype), generation_config.json and
// the tokenizer files, so that transformers and qtune load it as they load the source.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "qtune/io/hf_config.h"

namespace qtune::calib {

// Runs `write(tmp)` into `out_dir`.tmp and renames it to `out_dir` (which must not exist); on any failure the
// temporary directory is removed and the error propagates.
void write_directory_atomically(const std::string& out_dir, const std::function<void(const std::string& tmp)>& write);

// config.json, generation_config.json and the tokenizer files of `model_dir` into `dir`.
void write_model_files(const std::string& model_dir, const io::ModelConfig& config,
                       const nlohmann::json& quantization_config, at::ScalarType dtype, const std::string& dir);

}  // namespace qtune::calib
