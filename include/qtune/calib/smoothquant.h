#pragma once
// SmoothQuant (Xiao et al. 2022) as llm-compressor's SmoothQuantModifier runs it: per-channel scales that move the
// activations' outlier channels into the weights, so that both quantize to int8 (W8A8). The layer-by-layer driver
// holds one decoder layer's dense weights at a time, as the GPTQ and AWQ drivers do: the calibration sequences are
// embedded once; each layer runs on the current hidden states recording, per input channel j of each smoothed
// activation, its maximum and minimum over the calibration tokens; then, mapping by mapping,
//   s_j = r_j^α / w_j^(1−α)   (r_j when w_j = 0), clamped below at 1e-5,
// with r_j = max_j − min_j the activation's range and w_j = 2·max|W[:, j]| over every linear the activation feeds
// (llm-compressor's statistics: a range, twice the weight's half-range); the producer of the activation absorbs 1/s
// (a norm's weight w / s, Gemma's (1 + w) norms 1 + w' = (1 + w) / s; up_proj's rows and bias) and the linears s (their
// columns). The layer's outputs with its smoothed weights become the next layer's inputs, so every layer's statistics
// come from the model as smoothed so far — the same function, up to fp32 rounding.
// The mappings (llm-compressor's): input_layernorm → q/k/v (Phi-3: qkv_proj); the MLP's input norm → gate/up
// (post_attention_layernorm, Gemma 2/3's pre_feedforward_layernorm; Phi-3: gate_up_proj); with smooth_down, up_proj →
// down_proj (Phi-3: the up half of gate_up_proj's rows), whose statistics are down_proj's inputs (act(gate) · up).
// With auto_alpha, each layer takes the α of a grid over [0, 1] whose smoothing gives the smallest error of the decoder
// layer's output when its linears run W8A8 (int8 weights per output channel, int8 activations per token, both
// symmetric as compressed-tensors rounds them) against the fp32 layer's.
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "qtune/io/hf_config.h"

namespace qtune::calib {

// One smoothing: the linears that read one activation and the module that produces it, named under
// "model.layers.N.": a norm ("input_layernorm"), or a linear whose output rows produce it ("mlp.up_proj", or
// "mlp.gate_up_proj" with rows [intermediate, 2·intermediate)).
struct SmoothMapping {
  std::string smooth;
  std::vector<std::string> balance;
  bool smooth_is_norm = true;
  int64_t rows_offset = 0;  // the rows of a smoothing linear that produce the activation
};

struct SmoothQuantOptions {
  double alpha = 0.5;  // migration strength in [0, 1]
  bool auto_alpha = false;
  std::vector<double> alpha_grid;  // auto: the candidates (each in [0, 1]); empty: 0, 0.05, …, 1
  bool smooth_down = false;
  // The linears whose inputs are smoothed ("q_proj", "self_attn.gate_proj", …); each brings the whole group that
  // reads its input. Empty: the family's mappings above. A linear whose input no norm or linear can absorb scales
  // into (o_proj reads the attention's mix of heads) is an error naming it.
  std::vector<std::string> targets;
  int64_t batch = 8;              // calibration sequences per forward
  int64_t search_sequences = 16;  // sequences the W8A8 block error is measured on (-1: all)
  at::ScalarType dtype = at::kFloat;  // of the written tensors
};

// The mappings of every decoder layer of `config` under `options` (smooth_down, targets), in the order they are folded.
std::vector<SmoothMapping> smoothquant_mappings(const io::ModelConfig& config, const SmoothQuantOptions& options);

// The scales of one mapping from its activation's range r ([in]) and its balance linears' weights ([out_i, in]).
at::Tensor smoothquant_scales(const at::Tensor& range, const std::vector<at::Tensor>& balance_weights, double alpha);

struct SmoothLayerReport {
  int64_t layer = 0;
  double alpha = 0;  // the one applied (auto: the grid's best)
  // Mean squared error of the layer's output with its linears W8A8 fake-quantized, against the fp32 layer's, on the
  // search sequences: smoothed with `alpha`, and not smoothed (round-to-nearest W8A8).
  double error = 0, rtn_error = 0;
  std::vector<std::pair<double, double>> searched;  // auto: (α, error) for every candidate
  std::vector<std::pair<std::string, at::Tensor>> scales;  // full smoothing-module name -> s [channels], fp32
  double seconds = 0;
};

struct SmoothQuantReport {
  std::vector<SmoothLayerReport> layers;
  std::vector<SmoothMapping> mappings;
  int64_t calibration_tokens = 0, calibration_sequences = 0;
  double seconds = 0;
  int64_t bytes = 0;  // of the checkpoint written
};

using SmoothProgress = std::function<void(const SmoothLayerReport& done, int64_t index, int64_t total)>;

// Smooths the model in `model_dir` (a 16-bit Hugging Face directory or a GGUF) on the calibration sequences and writes
// it to `out_dir` (must not exist; appears complete or not at all) through SmoothedCheckpointWriter.
SmoothQuantReport smoothquant_model(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                                    const SmoothQuantOptions& options, const std::string& out_dir,
                                    const SmoothProgress& progress = {});

}  // namespace qtune::calib
