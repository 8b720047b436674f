#pragma once
// What quantization-aware training simulates in a linear: the deployment format of its weight (the merged
// W + scale·B·A for a LoRA layer, W itself in full fine-tuning) and, optionally, int8 per-token activations.
// Layers that carry it implement FakeQuantSwitch, so the trainer can turn it on at quant.qat_start.
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "qtune/quant/fake_quant.h"

namespace qtune::qat {

struct QatOptions {
  std::optional<quant::FakeQuantSpec> weights;  // none: the weight is used as it is
  bool int8_tokens = false;                     // activations through int8 per-token fake quantization
  bool active() const { return weights.has_value() || int8_tokens; }
};

// What each linear simulates, by its Hugging Face module name ("model.layers.3.self_attn.v_proj"): one format for all,
// or a GGUF type mix that gives some layers another type. An empty plan (or inactive options) leaves a layer as it is.
using QatPlan = std::function<QatOptions(const std::string& module_name)>;

class FakeQuantSwitch {
 public:
  virtual ~FakeQuantSwitch() = default;
  virtual void set_fake_quant(bool on) = 0;
};

// Turns fake quantization on or off in every layer under `module` that carries it; returns how many there are.
int64_t set_fake_quant(torch::nn::Module& module, bool on);

// The first step (0-based) whose forward is fake-quantized: ceil(start · total_steps), start in [0, 1).
int64_t qat_start_step(double start, int64_t total_steps);

}  // namespace qtune::qat
