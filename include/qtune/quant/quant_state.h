#pragma once
// The state of one 4-bit blockwise-quantized tensor, in bitsandbytes' layout (bitsandbytes/functional.py,
// class QuantState): packed codes, two per byte with the first element in the high nibble; one absmax per
// block of `blocksize` elements, either fp32 or double-quantized (8-bit codes into a 256-value dynamic map,
// rescaled per block of 256 absmax values, plus a global offset).
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "qtune/quant/codebook.h"

namespace qtune::quant {

struct NestedAbsmax {
  at::Tensor codes;    // uint8 [blocks]
  at::Tensor absmax;   // fp32 [ceil(blocks / blocksize)]
  at::Tensor map;      // fp32 [256], bitsandbytes' signed dynamic map
  int64_t blocksize = 256;
  float offset = 0.0f;  // mean of the fp32 absmax, subtracted before quantizing
};

struct Quant4State {
  Format4 format = Format4::NF4;
  int64_t blocksize = 64;
  std::vector<int64_t> shape;               // of the original tensor
  at::ScalarType dtype = at::kFloat;        // of the original tensor
  at::Tensor packed;                        // uint8 [ceil(numel / 2), 1]
  at::Tensor code;                          // fp32 [16]
  at::Tensor absmax;                        // fp32 [blocks]; undefined when nested
  std::optional<NestedAbsmax> nested;

  int64_t numel() const;
  int64_t blocks() const { return (numel() + blocksize - 1) / blocksize; }
  // Throws naming `what` when sizes, dtypes or devices disagree.
  void validate(const std::string& what) const;
  // The same state with every tensor on `device`.
  Quant4State to(at::Device device) const;
};

// A valid random state (any byte is a pair of codes; absmax positive; a stand-in nested map), for benchmarks
// and kernel tests, where the values need not come from a real weight.
Quant4State random_quant4_state(std::vector<int64_t> shape, int64_t blocksize, Format4 format, bool nested,
                                at::Generator& gen);

}  // namespace qtune::quant
