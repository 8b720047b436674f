#pragma once
// The layer-by-layer driver of AWQ: writes a Hugging Face AWQ (GEMM) checkpoint from a 16-bit model (or a GGUF) and
// calibration token sequences, holding one decoder layer's dense weights and input activations at a time. As
// AutoAWQ and gptqmodel run it on a Llama/Mistral layer: the layer runs on the current hidden states with its
// weights in fp32, recording the inputs of its linears; four groups of linears that share an input are scaled,
// each scored on the output of the block it feeds (quant/awq.h):
//   input_layernorm → q/k/v   (the attention's output)      v_proj → o_proj (only without GQA: shapes must agree)
//   post_attention_layernorm → gate/up (the MLP's output)    up_proj → down_proj
// (Gemma: pre_feedforward_layernorm feeds the MLP and takes (1 + w) / s − 1; Phi-3: qkv_proj and gate_up_proj are
// scaled by their norms only, v and up having no linear of their own.)
// all four searched on the unscaled layer, then folded in (the norm's weight or the previous linear's rows divided
// by s, the linears' columns multiplied by it); then every linear but q and k (their product through softmax makes
// the clipping loss meaningless, as AutoAWQ notes) gets its clipping search, and all are rounded on AWQ's grid. The
// layer's outputs with its deployed weights become the next layer's inputs. Embeddings, the final norm and lm_head
// are written unquantized in `dtype`.
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qtune/quant/awq.h"

namespace qtune::calib {

struct AwqRunOptions {
  quant::AwqOptions awq;
  at::ScalarType dtype = at::kHalf;  // the unquantized tensors
  int64_t batch = 8;                 // calibration sequences per forward
  // Sequences on which the scale search scores its 20 candidates (the means and the clipping use all of them):
  // each candidate is a forward of the block, the search's whole cost on a CPU. -1: all.
  int64_t search_sequences = -1;
};

struct AwqLinearReport {
  std::string name;
  // Mean squared output error on the calibration inputs (a token sample) of the deployed linear, mapped back to the
  // unscaled model, and of round-to-nearest on the same grid without AWQ.
  double error = 0, rtn_error = 0;
  double ratio = -1;  // the α its scale group chose; -1: not scaled (o_proj under GQA)
  bool clipped = false;
  double seconds = 0;
};

struct AwqRunReport {
  std::vector<AwqLinearReport> linears;  // in model order
  int64_t calibration_tokens = 0;
  double seconds = 0;
  double bits_per_weight = 0;  // over the quantized linears (codes, zeros, fp16 scales)
  int64_t bytes = 0;
};

using AwqProgress = std::function<void(const AwqLinearReport& done, int64_t index, int64_t total)>;

// Writes `out_dir` (must not exist; appears complete or not at all).
AwqRunReport quantize_to_awq(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                             const AwqRunOptions& options, const std::string& out_dir, const AwqProgress& progress = {});

}  // namespace qtune::calib
