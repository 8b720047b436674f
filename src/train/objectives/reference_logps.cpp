#include "qtune/train/objectives/reference_logps.h"

#include <torch/csrc/autograd/grad_mode.h>

#include "qtune/lora/adapter_switch.h"
#include "qtune/train/objectives/sequence_logps.h"

namespace qtune::train {
namespace {

constexpr uint64_t kFnvOffset = 1469598103934665603ull, kFnvPrime = 1099511628211ull;

uint64_t mix(uint64_t h, int64_t v) {
  for (int i = 0; i < 8; ++i) h = (h ^ ((static_cast<uint64_t>(v) >> (8 * i)) & 0xff)) * kFnvPrime;
  return h;
}

}  // namespace

uint64_t ReferenceTable::row_key(const data::Batch& b, int64_t row) {
  const auto ids = b.input_ids[row].to(at::kCPU).contiguous(), targets = b.targets[row].to(at::kCPU).contiguous();
  const auto segments = b.segment_ids[row].to(at::kCPU).contiguous();
  const int64_t t = ids.size(0);
  const auto* id = ids.data_ptr<int64_t>();
  const auto* target = targets.data_ptr<int64_t>();
  const auto* segment = segments.data_ptr<int64_t>();
  int64_t length = 0;  // up to the padding (segment -1), which depends on the batch, not the sample
  for (int64_t i = 0; i < t; ++i)
    if (segment[i] >= 0) length = i + 1;
  uint64_t h = mix(kFnvOffset, length);
  for (int64_t i = 0; i < length; ++i) h = mix(mix(mix(h, id[i]), target[i]), segment[i]);
  return h;
}

std::optional<at::Tensor> ReferenceTable::lookup(const data::Batch& b) const {
  const int64_t rows = b.input_ids.size(0);
  auto out = at::empty({rows}, at::kFloat);
  auto* v = out.data_ptr<float>();
  for (int64_t i = 0; i < rows; ++i) {
    const auto it = values_.find(row_key(b, i));
    if (it == values_.end()) return std::nullopt;
    v[i] = it->second;
  }
  return out;
}

at::Tensor reference_logps(nn::CausalLMImpl& model, const data::Batch& b, const ReferenceTable* table) {
  if (table) {
    if (auto cached = table->lookup(b)) return cached->to(model.lm_head_weight().device());
    table->count_miss();
  }
  torch::NoGradGuard no_grad;
  lora::AdaptersDisabled reference_policy(model);
  return sequence_logps(model, b).logps;
}

}  // namespace qtune::train
