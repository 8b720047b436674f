#pragma once
// The method scan behind `qtune quantize --method auto` and a recipe's `quant.method: auto`: every linear is stored,
// on its own, in each method asked for (NF4, int8, GPTQ int4, AWQ int4, 16-bit), and the calibration loss that adds
// is measured from its decoder layer on (the dense states before it cached: calib/scan_model.h). GPTQ gets the
// Hessian of the dense model's inputs of that linear over the calibration windows; AWQ searches its per-input-channel
// scale (and clipping) for that linear on the same inputs and keeps the scale unfused (quant/gptq_weight.h), since
// the linears sharing an input may choose other methods. The scored weights are the stored ones (fp16 scales
// included), so a checkpoint written from a choice holds exactly what was measured (calib/method_checkpoint.h).
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qtune/calib/method_choice.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/safetensors.h"
#include "qtune/quant/awq.h"
#include "qtune/quant/int_grid.h"
#include "qtune/quant/quantized_weight.h"

namespace qtune::calib {

struct MethodScanOptions {
  std::vector<std::string> methods = kAllMethods;
  int64_t seq_len = 256;
  // With GPTQ or AWQ among the methods: they are fitted on every other window and all options scored on the rest
  // (an option is not scored on the data it was fitted to); false: both on all of them.
  bool held_out = true;
  quant::IntGridOptions gptq_grid{4, 128, true};
  double damp = 0.01;
  quant::AwqOptions awq;                // its grid: int4 g128 with zero points
  int64_t awq_search_tokens = 2048;     // the inputs the scale search scores each candidate on
  int64_t nf4_blocksize = 64;
  // What 16bit stores: bf16 for a bf16 checkpoint, else fp16.
  std::optional<at::ScalarType> dtype16;
  // After each linear's methods are measured (index from 1).
  std::function<void(const LinearOptions& done, int64_t index, int64_t total, double seconds)> progress;
};

class MethodScan {
 public:
  // Loads the model (fp32), caches the dense layer inputs, and measures every linear in every method it can hold
  // (GPTQ and AWQ need groups that divide its inputs and whole int32 words).
  MethodScan(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
             const MethodScanOptions& options);
  ~MethodScan();

  const std::vector<LinearOptions>& table() const;  // in model order
  double dense_loss() const;
  // The windows the losses are measured on (with held_out, every second calibration window).
  const std::vector<std::vector<int64_t>>& scored_windows() const;
  // The whole model's calibration mean NLL with each linear as `chosen` says (indices into its options).
  double loss_of(const std::vector<size_t>& chosen);
  // Every linear in `method`; nullopt when some linear cannot hold it.
  std::optional<std::vector<size_t>> uniform(const std::string& method) const;
  // The stored weight of linear `linear`'s option `option` (null for 16bit).
  c10::intrusive_ptr<quant::QuantizedWeight> candidate(size_t linear, size_t option) const;
  at::Tensor dense16(size_t linear) const;  // what 16bit stores, in its dtype
  // Every tensor but the decoder linears' weights (embeddings, norms, lm_head when untied, the linears' biases), in
  // `dtype`, named as the checkpoint names them.
  io::NamedTensors other_tensors(at::ScalarType dtype) const;
  const MethodScanOptions& options() const;
  const std::string& model_dir() const;
  const io::ModelConfig& config() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace qtune::calib
