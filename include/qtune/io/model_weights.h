#pragma once
// A model's weights wherever they are stored: a Hugging Face directory's safetensors shards, or a GGUF file.
#include <memory>
#include <string>

#include "qtune/io/weight_source.h"

namespace qtune::io {

std::shared_ptr<WeightSource> open_model_weights(const std::string& path);

}  // namespace qtune::io
