#pragma once
// A GGUF of one of the decoder families as a Hugging Face model: its metadata as a config.json (what llama.cpp reads
// from it, including what it implies without a key, such as Gemma 3's five sliding layers to one global), and its
// tensors under Hugging Face names, dequantized to float32 one at a time, with what llama.cpp's converter changed
// undone (io/gguf_layout.h).
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>

#include "qtune/io/gguf.h"
#include "qtune/io/gguf_layout.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/weight_source.h"

namespace qtune::io {

// config.json for the file (general.architecture llama, mistral, qwen2, qwen3, gemma2, gemma3 or phi3); an
// architecture or feature qtune cannot run is an error naming the file and the key.
nlohmann::json gguf_config_json(const GgufFile& file);
ModelConfig gguf_model_config(const GgufFile& file);

class GgufWeights : public WeightSource {
 public:
  explicit GgufWeights(std::shared_ptr<const GgufFile> file);
  bool has(const std::string& name) const override;
  at::Tensor get(const std::string& name, at::IntArrayRef shape) const override;
  void release(const std::string& name) const override;
  // The tensor's ggml blocks as the file stores them (no dequantization), Q/K rows unpermuted by moving whole rows.
  std::optional<StoredBlocks> stored_blocks(const std::string& name) const override;
  const GgufFile& file() const { return *file_; }
  const GgufLayout& layout() const { return layout_; }

 private:
  std::shared_ptr<const GgufFile> file_;
  GgufLayout layout_;
};

}  // namespace qtune::io
