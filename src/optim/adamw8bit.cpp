#include "qtune/optim/adamw8bit.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "qtune/optim/paged_state.h"
#include "qtune/quant/nf4.h"
#include "qtune/util/error.h"

namespace qtune::optim {
namespace {

constexpr int64_t kTableSize = 65536;  // bitsandbytes' kLUTSize

int64_t block_count(int64_t n) { return (n + kStateBlockSize - 1) / kStateBlockSize; }

// Each element's block value (absmax or its reciprocal) beside it: [blocks] -> [n].
at::Tensor per_element(const at::Tensor& per_block, int64_t n) {
  return per_block.repeat_interleave(kStateBlockSize).narrow(0, 0, n);
}

// bitsandbytes' build_quantize_lut: entry i holds the first code whose midpoint to the next one is not below
// -1 + 2 i / 65535, all in fp32.
at::Tensor build_table(const at::Tensor& map) {
  auto code = map.to(at::kCPU).contiguous();
  const float* c = code.data_ptr<float>();
  std::vector<float> midpoints(255);
  for (int i = 0; i < 255; ++i) midpoints[i] = 0.5f * (c[i] + c[i + 1]);
  auto table = at::empty({kTableSize}, at::kByte);
  uint8_t* out = table.data_ptr<uint8_t>();
  int code_idx = 0;
  for (int i = 0; i < kTableSize; ++i) {
    const float val = -1.0f + (2.0f * static_cast<float>(i)) / static_cast<float>(kTableSize - 1);
    while (code_idx < 255 && midpoints[code_idx] < val) ++code_idx;
    out[i] = static_cast<uint8_t>(code_idx);
  }
  return table;
}

// bitsandbytes' 32-bit Adam update (backends/cpu/ops.py _optimizer_update_32bit_cpu), which its 8-bit optimizers
// use for parameters below min_8bit_size: eps is scaled by the bias correction instead of dividing it out.
void bnb_adam32_update(at::Tensor& p, const at::Tensor& grad, at::Tensor& state1, at::Tensor& state2,
                       const AdamWOptions& o, int64_t step, double lr) {
  state1.mul_(o.beta1).add_(grad, 1.0 - o.beta1);
  state2.mul_(o.beta2).addcmul_(grad, grad, 1.0 - o.beta2);
  const double correction1 = 1.0 - std::pow(o.beta1, step);
  const double correction2 = std::sqrt(1.0 - std::pow(o.beta2, step));
  const double step_size = -lr * correction2 / correction1;
  if (o.weight_decay > 0.0) p.mul_(1.0 - lr * o.weight_decay);
  const auto update = state1 / (state2.sqrt() + o.eps * correction2);
  p.add_(update, step_size);
}

}  // namespace


BlockwiseQuantizer::BlockwiseQuantizer(at::Tensor map) : map_(map.to(at::kFloat).contiguous()) {
  if (map_.dim() != 1 || map_.numel() != 256) fail("8-bit optimizer state: the map must hold 256 values");
  table_ = build_table(map_).to(map_.device());
}

void BlockwiseQuantizer::quantize(const at::Tensor& values, BlockwiseState& into) const {
  const int64_t n = values.numel();
  auto x = values.reshape({-1});
  // absmax per block, the tail block padded with zeros (which never raise it); NaN counts as 0 as in
  // bitsandbytes' AVX2 path, so one NaN does not poison its block's scale.
  auto magnitude = x.abs();
  magnitude.masked_fill_(magnitude.isnan(), 0);
  const int64_t blocks = block_count(n);
  auto absmax = at::constant_pad_nd(magnitude, {0, blocks * kStateBlockSize - n}, 0).view({blocks, kStateBlockSize}).amax(1);
  // quantize_cpu_impl's index ((clamp(x * (1 / absmax), -1, 1) + 1) * 0.5) * 65535 + 0.5, truncated, one fp32
  // rounding per op. An all-zero block gives 0 * inf = NaN, which (like NaN input) becomes -1: code 0, as
  // bitsandbytes writes for such blocks.
  auto v = x * per_element(at::reciprocal(absmax), n);
  v.nan_to_num_(-1.0).clamp_(-1.0, 1.0);
  v.add_(1.0).mul_(0.5).mul_(static_cast<double>(kTableSize - 1)).add_(0.5);
  into.codes.copy_(table_.index_select(0, v.to(at::kInt)));
  into.absmax.copy_(absmax);
}

at::Tensor BlockwiseQuantizer::dequantize(const BlockwiseState& state) const {
  const int64_t n = state.codes.numel();
  return map_.index_select(0, state.codes.to(at::kInt)) * per_element(state.absmax, n);
}

int64_t adamw8bit_state_bytes(int64_t numel) {
  if (numel < kMin8bitSize) return 2 * numel * int64_t{sizeof(float)};
  return 2 * (numel + block_count(numel) * int64_t{sizeof(float)});
}

AdamW8bit::AdamW8bit(NamedParams params, AdamWOptions options, bool paged)
    : Optimizer(std::move(params), options), paged_(paged) {
  for (const auto& [name, p] : this->params()) {
    Slot slot;
    const int64_t n = p.numel();
    slot.quantized = n >= kMin8bitSize;
    const auto dev = p.device();
    if (slot.quantized) {
      // Zero codes with zero absmax decode to (-)0: the same start as fp32 zeros.
      for (auto* s : {&slot.exp_avg, &slot.exp_avg_sq}) {
        s->codes = state_zeros({n}, at::kByte, dev, paged_);
        s->absmax = state_zeros({block_count(n)}, at::kFloat, dev, paged_);
      }
      if (std::none_of(quantizers_.begin(), quantizers_.end(), [&](const auto& q) { return q.first == dev; }))
        quantizers_.emplace_back(dev, Quantizers{BlockwiseQuantizer(quant::dynamic_map(true).to(dev)),
                                                 BlockwiseQuantizer(quant::dynamic_map(false).to(dev))});
    } else {
      slot.exp_avg_f32 = state_zeros(p.sizes(), at::kFloat, dev, paged_);
      slot.exp_avg_sq_f32 = state_zeros(p.sizes(), at::kFloat, dev, paged_);
    }
    slots_.push_back(std::move(slot));
  }
}

const AdamW8bit::Quantizers& AdamW8bit::quantizers_for(at::Device device) const {
  for (const auto& [dev, q] : quantizers_)
    if (dev == device) return q;
  fail("adamw_8bit: no quantization maps on {} (the parameter moved after the optimizer was built)", device.str());
}

void AdamW8bit::step(double lr) {
  check_lr(lr);
  const at::NoGradGuard no_grad;
  if (paged_)
    for (const auto& [name, t] : state_tensors()) prefetch(t);
  for (size_t i = 0; i < params().size(); ++i) {
    const auto grad = grad_of(i);
    if (!grad.defined()) continue;
    const int64_t step = next_param_step(i);
    auto& slot = slots_[i];
    if (slot.quantized)
      step_quantized(params()[i].second, grad, slot, options_for(i), step, lr);
    else
      step_fp32(params()[i].second, grad, slot, options_for(i), step, lr);
  }
  finish_step();
}

void AdamW8bit::step_fp32(const at::Tensor& param, const at::Tensor& grad, Slot& slot, const AdamWOptions& o,
                          int64_t step, double lr) const {
  at::Tensor p = param;
  bnb_adam32_update(p, grad, slot.exp_avg_f32, slot.exp_avg_sq_f32, o, step, lr);
}

void AdamW8bit::step_quantized(const at::Tensor& param, const at::Tensor& grad, Slot& slot, const AdamWOptions& o,
                               int64_t step, double lr) const {
  // _optimizer_update_8bit_blockwise_cpu, op for op: dequantize, update the moments, decay, addcdiv, requantize.
  const auto& q = quantizers_for(param.device());
  at::Tensor p = param;
  auto state1 = q.exp_avg.dequantize(slot.exp_avg).view(p.sizes());
  auto state2 = q.exp_avg_sq.dequantize(slot.exp_avg_sq).view(p.sizes());
  state1.mul_(o.beta1).add_(grad, 1.0 - o.beta1);
  state2.mul_(o.beta2).addcmul_(grad, grad, 1.0 - o.beta2);
  const double correction1 = 1.0 - std::pow(o.beta1, step);
  const double correction2 = std::sqrt(1.0 - std::pow(o.beta2, step));
  const auto denom = (state2.sqrt() / correction2).add_(o.eps);
  if (o.weight_decay > 0.0) p.mul_(1.0 - lr * o.weight_decay);
  p.addcdiv_(state1, denom, -lr / correction1);
  q.exp_avg.quantize(state1, slot.exp_avg);
  q.exp_avg_sq.quantize(state2, slot.exp_avg_sq);
}

std::vector<std::pair<std::string, at::Tensor>> AdamW8bit::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const auto& name = params()[i].first;
    const auto& s = slots_[i];
    if (s.quantized) {
      out.emplace_back(name + ".exp_avg.codes", s.exp_avg.codes);
      out.emplace_back(name + ".exp_avg.absmax", s.exp_avg.absmax);
      out.emplace_back(name + ".exp_avg_sq.codes", s.exp_avg_sq.codes);
      out.emplace_back(name + ".exp_avg_sq.absmax", s.exp_avg_sq.absmax);
    } else {
      out.emplace_back(name + ".exp_avg", s.exp_avg_f32);
      out.emplace_back(name + ".exp_avg_sq", s.exp_avg_sq_f32);
    }
  }
  return out;
}

}  // namespace qtune::optim
