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

uint64_t dropout_key(uint64_t seed, int64_t epoch, int64_t salt) {
  return mix(mix(mix(seed) ^ static_cast<uint64_t>(epoch)) ^ static_cast<uint64_t>(salt));
}

uint64_t row_seed(uint64_t key, uint64_t module, int64_t row) {
  return mix(key ^ mix(module ^ static_cast<uint64_t>(row)));
}

at::Tensor hashed_row_mask(at::IntArrayRef shape, double keep, uint64_t key, uint64_t module, int64_t first_row,
                           at::Device device) {
  // splitmix64 over (row seed + element index · golden ratio), in int64 tensors: multiplication wraps modulo 2^64 and
  // the right shifts are masked to act as logical ones; the top 24 bits against keep · 2^24.
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  const int64_t rows = shape[0];
  const int64_t per_row = rows ? c10::multiply_integers(shape) / rows : 0;
  std::vector<int64_t> seeds(rows);
  for (int64_t r = 0; r < rows; ++r) seeds[r] = static_cast<int64_t>(row_seed(key, module, first_row + r));
  auto x = at::tensor(seeds, at::kLong).to(device).view({rows, 1}) +
           at::arange(per_row, opts).mul_(static_cast<int64_t>(0x9e3779b97f4a7c15ull)).view({1, per_row});
  auto shr = [](const at::Tensor& v, int bits) { return v.bitwise_right_shift(bits).bitwise_and_((int64_t{1} << (64 - bits)) - 1); };
  x = x.bitwise_xor(shr(x, 30)).mul_(static_cast<int64_t>(0xbf58476d1ce4e5b9ull));
  x = x.bitwise_xor(shr(x, 27)).mul_(static_cast<int64_t>(0x94d049bb133111ebull));
  x = x.bitwise_xor(shr(x, 31));
  const auto threshold = static_cast<int64_t>(keep * double(int64_t{1} << 24));
  return shr(x, 40).lt(threshold).view(shape);
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
  if (!x.is_cpu())
    return x * hashed_row_mask(x.sizes(), keep, rows->key, module, rows->first_row, x.device()).to(x.scalar_type())
                   .div_(keep);
  auto mask = at::empty(x.sizes(), x.options());
  for (int64_t r = 0; r < x.size(0); ++r) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(row_seed(rows->key, module, rows->first_row + r));
    mask[r].bernoulli_(keep, g);
  }
  mask.div_(keep);
  return x * mask;
}

}  // namespace qtune::lora
