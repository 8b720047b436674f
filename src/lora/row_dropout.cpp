#include "qtune/lora/row_dropout.h"

#include <ATen/CPUGeneratorImpl.h>

namespace qtune::lora {
namespace {

std::optional<DropoutRows>& current() {
  static std::optional<DropoutRows> rows;
  return rows;
}

// splitmix64's finaliser: distinct inputs give unrelated seeds.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

DropoutRowsScope::DropoutRowsScope(DropoutRows rows) : previous_(current()) { current() = rows; }
DropoutRowsScope::~DropoutRowsScope() { current() = previous_; }

uint64_t dropout_key(uint64_t seed, int64_t step, int64_t micro_batch) {
  return mix(mix(mix(seed) ^ static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(micro_batch));
}

uint64_t module_key(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

at::Tensor row_keyed_dropout(const at::Tensor& x, double p, uint64_t module) {
  const auto& rows = current();
  if (!rows || x.dim() < 2) return at::dropout(x, p, true);
  const double keep = 1.0 - p;
  auto mask = at::empty(x.sizes(), x.options().device(at::kCPU));
  for (int64_t r = 0; r < x.size(0); ++r) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(mix(rows->key ^ mix(module ^ static_cast<uint64_t>(rows->first_row + r))));
    mask[r].bernoulli_(keep, g);
  }
  mask.div_(keep);
  return x * mask.to(x.device(), /*non_blocking=*/true);
}

}  // namespace qtune::lora
