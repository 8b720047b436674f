#pragma once
// Mixed precision as QLoRA runs it: the frozen base computes in a 16-bit "compute dtype" (bitsandbytes'
// bnb_4bit_compute_dtype), while adapters, their gradients and optimizer state stay fp32 (the LoRA layer casts its
// input up and its delta back). bf16 needs no loss scaling; fp16 does, since small adapter gradients underflow its
// 5-bit exponent: DynamicLossScaler is torch.cuda.amp.GradScaler's algorithm.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace qtune::train {

// recipe train.precision (auto | bf16 | fp16 | fp32) on a device, for a model of `hidden_size` -> the base's compute
// dtype. auto: bf16 on a GPU that has it, else fp16. On the CPU: bf16 where it has AVX512-BF16 and the model is not
// tiny (hidden_size >= kCpuBf16MinHidden): oneDNN's bf16 matmuls then run at about twice fp32's rate and elementwise
// work moves half the bytes (1.4x per QLoRA step at hidden 256, 1.6x at SmolLM2's 576: docs/PERFORMANCE.md); below
// that, per-operator overhead and the casts around the fp32 adapters cost more than the matmuls save (the demo's
// hidden-128 QLoRA: 35-37 s in fp32, 40-42 s in bf16). fp32 elsewhere: emulated bf16 would be slower.
inline constexpr int64_t kCpuBf16MinHidden = 256;
at::ScalarType compute_dtype(const std::string& precision, at::Device device, int64_t hidden_size);

class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(double initial_scale = 65536.0, double growth_factor = 2.0, double backoff_factor = 0.5,
                             int64_t growth_interval = 2000);
  double scale() const { return scale_; }
  // Divides the gradients by the scale; false (and the scale backs off) if any is inf/NaN: skip the step then.
  bool unscale_and_check(const std::vector<at::Tensor>& params);
  // After a good step: grows the scale after growth_interval good steps in a row.
  void update_after_good_step();
  int64_t good_steps() const { return good_steps_; }
  int64_t skipped_steps() const { return skipped_; }
  // For checkpoints.
  std::vector<double> state() const { return {scale_, static_cast<double>(good_steps_), static_cast<double>(skipped_)}; }
  void load_state(const std::vector<double>& s);

 private:
  double scale_, growth_, backoff_;
  int64_t interval_, good_steps_ = 0, skipped_ = 0;
};

// Global L2 norm of the gradients (fp32 accumulation), and clipping to max_norm (no-op when max_norm <= 0).
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace qtune::train
