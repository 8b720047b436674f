#pragma once
// A GPTQ checkpoint on W8A8's weight grid (8 bits, one group per row, symmetric) rewritten as compressed-tensors' W8A8
// checkpoint: llm-compressor's W8A8 recipe (SmoothQuant, then GPTQ) ends there, and vLLM serves it with int8
// activations. GPTQ's symmetric 8-bit grid is value = scale · (code − 128) with codes 0 … 255, so the int8 code is
// code − 128 with the same scale (the fp16 scale the GPTQ checkpoint stores, which GPTQ's reported errors use): the
// weights are exactly the GPTQ checkpoint's, and the runtime adds the per-token input rounding.
#include <ATen/ATen.h>

#include <string>

#include "qtune/io/sharded_writer.h"

namespace qtune::exporting {

// `gptq_dir`: the linears (each must be on the grid above; a linear it keeps dense is written dense and ignored).
// `dense_dir`: the same model unquantized, whose other tensors (embeddings, norms, lm_head, biases) are written in
// `dtype` (the GPTQ checkpoint holds them in fp16 already rounded). `out_dir` must not exist; it appears complete or
// not at all.
io::ShardedWriter::Result w8a8_from_gptq(const std::string& gptq_dir, const std::string& dense_dir,
                                         const std::string& out_dir, at::ScalarType dtype);

}  // namespace qtune::exporting
