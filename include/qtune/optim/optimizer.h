#pragma once
// The optimizer interface the trainer steps: AdamW in fp32 (adamw.h), its paged variant (state in CUDA managed
// memory, paged_state.h) and bitsandbytes' blockwise 8-bit AdamW (adamw8bit.h). It owns only the trainable fp32
// parameters (the LoRA adapters); the learning rate comes from the schedule at every step, not from the options.
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qtune/io/safetensors.h"

namespace qtune::optim {

// torch.optim.AdamW's hyper-parameters; `lr` is the base rate the schedule scales.
struct AdamWOptions {
  double lr = 2e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};
void validate(const AdamWOptions& options);  // fails naming the field out of range

using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;

// Whether weight decay applies to the parameter `name`: not to biases and norm weights, as HF Trainer's
// get_decay_parameter_names leaves out (its patterns bias, layernorm, rmsnorm, a `norm` component and `_norm`).
bool applies_weight_decay(const std::string& name);

class Optimizer {
 public:
  // `params`: unique non-empty names, defined fp32 tensors (the model's trainable parameters themselves).
  Optimizer(NamedParams params, AdamWOptions options);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of each parameter whose grad is defined, at this learning rate (the schedule's); parameters
  // without a grad keep their state and their own step count, as in torch. Increments step_count().
  virtual void step(double lr) = 0;
  void zero_grad();  // grads back to undefined (torch's set_to_none)
  int64_t step_count() const { return step_count_; }

  // Everything an exact resume needs, as named CPU tensors: "step" (int64 scalar), "<param>.step" and the
  // kind's state tensors (e.g. "<param>.exp_avg"). load_state_dict checks every name, shape and dtype before
  // changing anything and fails naming the first mismatch; after it, further steps are bit-identical to never
  // having stopped.
  virtual io::NamedTensors state_dict() const;
  virtual void load_state_dict(const io::NamedTensors& state);
  virtual int64_t state_bytes() const;  // bytes of the state tensors (moments, codes, absmax)

  const NamedParams& params() const { return params_; }
  const AdamWOptions& options() const { return options_; }
  virtual std::string kind() const = 0;  // the make_optimizer name

 protected:
  // The kind's state tensors, named after their parameter (e.g. "w.exp_avg"), in a fixed order.
  virtual std::vector<std::pair<std::string, at::Tensor>> state_tensors() const = 0;
  // The options parameter `index` is updated with: weight_decay 0 where applies_weight_decay says so.
  AdamWOptions options_for(size_t index) const;
  // Bumps the parameter's own step (bias correction uses it) and returns it.
  int64_t next_param_step(size_t index) { return ++param_steps_[index]; }
  // The grad of parameter `index` checked against it (shape, fp32), or undefined when it has none.
  at::Tensor grad_of(size_t index) const;
  static void check_lr(double lr);
  void finish_step() { ++step_count_; }

 private:
  NamedParams params_;
  AdamWOptions options_;
  int64_t step_count_ = 0;
  std::vector<int64_t> param_steps_;
};

// The optimizer names a recipe may use.
inline const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"adamw", "paged_adamw", "adamw_8bit", "paged_adamw_8bit"};
  return names;
}

// name: adamw | paged_adamw | adamw_8bit | paged_adamw_8bit; any other name fails listing these.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, NamedParams params, AdamWOptions options);

// The state bytes `name` will hold for parameters of these element counts (the memory plan, before anything is
// loaded); equals state_bytes() of that optimizer once built.
int64_t estimate_state_bytes(const std::string& name, const std::vector<int64_t>& param_numels);

}  // namespace qtune::optim
