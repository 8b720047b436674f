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

Quant4State Quant4State::to(at::Device device) const {
  Quant4State s = *this;
  s.packed = packed.to(device);
  s.code = code.to(device);
  if (absmax.defined()) s.absmax = absmax.to(device);
  if (nested) {
    s.nested->codes = nested->codes.to(device);
    s.nested->absmax = nested->absmax.to(device);
    s.nested->map = nested->map.to(device);
  }
  return s;
}

Quant4State random_quant4_state(std::vector<int64_t> shape, int64_t blocksize, Format4 format, bool nested,
                                at::Generator& gen) {
  Quant4State s;
  s.format = format;
  s.blocksize = blocksize;
  s.shape = std::move(shape);
  const auto& book = codebook(format);
  s.code = at::tensor(std::vector<float>(book.begin(), book.end()));
  s.packed = at::randint(256, {(s.numel() + 1) / 2, 1}, gen, at::kByte);
  if (nested) {
    NestedAbsmax n;
    n.codes = at::randint(256, {s.blocks()}, gen, at::kByte);
    n.map = at::linspace(-1.0, 1.0, 256, at::kFloat);
    n.absmax = at::rand({(s.blocks() + 255) / 256}, gen, at::kFloat) + 0.1;
    n.offset = 0.37f;
    s.nested = n;
  } else {
    s.absmax = at::rand({s.blocks()}, gen, at::kFloat) * 3 + 1e-3;
  }
  return s;
}

}  // namespace qtune::quant
