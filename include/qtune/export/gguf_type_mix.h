#pragma once
// Which ggml type each tensor of an exported GGUF gets, as llama.cpp's llama-quantize chooses it
// (src/llama-quant.cpp, llama_tensor_get_type, for the llama architecture without experts): 1-D tensors and norms
// stay F32; the output tensor (or tied token embeddings) gets Q6_K (Q8_0 when its rows are not whole 256-blocks,
// or for q8_0 files); the _k_m mixes give attn_v and ffn_down Q6_K in the layers use_more_bits picks; a type whose
// block does not divide a row falls back (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, then F16).
#include <cstdint>
#include <string>
#include <vector>

#include "qtune/quant/ggml_types.h"

namespace qtune::exporting {

// The --type of `qtune export --gguf`: llama.cpp's file types (general.file_type).
struct GgufFileType {
  const char* name;            // "q4_k_m"
  uint32_t llama_ftype;        // LLAMA_FTYPE_MOSTLY_Q4_K_M = 15
  quant::GgmlType base;        // the type most tensors get
  bool k_mix;                  // a _k_m mixture
};

const GgufFileType& parse_gguf_file_type(const std::string& name);  // error listing the choices
const GgufFileType* find_gguf_file_type(const std::string& name);   // nullptr when there is none of that name
std::string gguf_file_type_names();                                   // "f32 | f16 | ..."

// Chooses types tensor by tensor, in file order (the layer counters follow the order attn_v and ffn_down come).
class GgufTypeMix {
 public:
  GgufTypeMix(const GgufFileType& file_type, int64_t n_layers, bool tied_embeddings, bool has_importance);
  // `name`: the GGUF name ("blk.3.attn_v.weight"); `shape`: torch order (shape.back() is ggml's ne[0]).
  quant::GgmlType choose(const std::string& name, const std::vector<int64_t>& shape);

 private:
  const GgufFileType& ft_;
  int64_t n_layers_;
  bool tied_, importance_;
  int64_t i_attn_v_ = 0, i_ffn_down_ = 0;
};

}  // namespace qtune::exporting
