#pragma once
// A llama-architecture GGUF as a Hugging Face model: its metadata as a config.json (what transformers' GGUF loader
// derives), and its tensors under Hugging Face names, dequantized to float32 one at a time, with llama.cpp's Q/K
// row permutation undone (GGUF stores rotary pairs interleaved; Hugging Face's rotate-half wants them in halves).
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>

#include "qtune/io/gguf.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/weight_source.h"

namespace qtune::io {

// config.json for the file (model_type llama or mistral); an architecture or feature qtune cannot run is an error
// naming the file and the key.
nlohmann::json gguf_config_json(const GgufFile& file);
ModelConfig gguf_model_config(const GgufFile& file);

// The GGUF tensor name of a Hugging Face parameter ("model.layers.3.mlp.up_proj.weight" → "blk.3.ffn_up.weight");
// empty when the name has no GGUF counterpart.
std::string gguf_tensor_name(const std::string& hf_name);
// The other way ("blk.3.ffn_up.weight" → "model.layers.3.mlp.up_proj.weight"); empty when qtune has no place for it.
std::string hf_tensor_name(const std::string& gguf_name);

class GgufWeights : public WeightSource {
 public:
  explicit GgufWeights(std::shared_ptr<const GgufFile> file);
  bool has(const std::string& name) const override;
  at::Tensor get(const std::string& name, at::IntArrayRef shape) const override;
  void release(const std::string& name) const override;
  // The tensor's ggml blocks as the file stores them (no dequantization), Q/K rows unpermuted by moving whole rows.
  std::optional<StoredBlocks> stored_blocks(const std::string& name) const override;
  const GgufFile& file() const { return *file_; }

 private:
  std::shared_ptr<const GgufFile> file_;
  int64_t heads_ = 0, kv_heads_ = 0;
};

// The heads over which llama.cpp interleaves the rotary rows of the Hugging Face tensor `hf_name`: `heads` for a
// q_proj weight or bias, `kv_heads` for k_proj, 0 for every other tensor.
int64_t rotary_heads(const std::string& hf_name, int64_t heads, int64_t kv_heads);

// Undoes llama.cpp's convert_hf_to_gguf permute for a q_proj/k_proj weight (or bias) of `heads` heads.
at::Tensor unpermute_rotary_rows(const at::Tensor& w, int64_t heads);
// convert_hf_to_gguf's permute itself (rotary halves to interleaved pairs per head), what a GGUF export writes.
at::Tensor permute_rotary_rows(const at::Tensor& w, int64_t heads);

}  // namespace qtune::io
