#include "qtune/quant/quant_state.h"

#include "qtune/util/error.h"

namespace qtune::quant {

int64_t Quant4State::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

void Quant4State::validate(const std::string& what) const {
  if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)) != 0)
    fail("{}: blocksize {} must be a power of two from 32 to 4096", what, blocksize);
  const int64_t n = numel();
  auto check = [&](const at::Tensor& t, const char* name, at::ScalarType type, int64_t count) {
    if (!t.defined()) fail("{}: missing {}", what, name);
    if (t.scalar_type() != type)
      fail("{}: {} must be {}, got {}", what, name, c10::toString(type), c10::toString(t.scalar_type()));
    if (t.numel() != count) fail("{}: {} must hold {} values for {} elements, got {}", what, name, count, n, t.numel());
    if (t.device() != packed.device()) fail("{}: {} is on {} but the codes are on {}", what, name, t.device().str(), packed.device().str());
    if (!t.is_contiguous()) fail("{}: {} must be contiguous", what, name);
  };
  check(packed, "packed codes", at::kByte, (n + 1) / 2);
  check(code, "code map", at::kFloat, 16);
  if (nested) {
    check(nested->codes, "nested absmax codes", at::kByte, blocks());
    if (nested->blocksize <= 0) fail("{}: nested blocksize {} must be positive", what, nested->blocksize);
    check(nested->absmax, "nested absmax", at::kFloat, (blocks() + nested->blocksize - 1) / nested->blocksize);
    check(nested->map, "nested map", at::kFloat, 256);
  } else {
    check(absmax, "absmax", at::kFloat, blocks());
  }
}

}  // namespace qtune::quant
