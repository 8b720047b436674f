#include "qtune/quant/nf4.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "qtune/util/error.h"

namespace qtune::quant {
namespace {

void check_blocksize(int64_t blocksize) {
  if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)) != 0)
    fail("4-bit quantization: block size {} must be a power of two from 32 to 4096", blocksize);
}

// at::bucketize(values, bounds) (right = false) for 15 sorted bounds: per value, how many bounds lie strictly below it.
// Counting with 15 comparisons vectorises across values, where ATen's per-value binary search does not (it was half
// of quantize_4bit's time, and quantization-aware training runs quantize_4bit in every forward).
at::Tensor bucketize_15(const at::Tensor& values, const at::Tensor& sorted_bounds) {
  const auto v = values.contiguous();
  float b[15];
  for (int j = 0; j < 15; ++j) b[j] = sorted_bounds[j].item<float>();
  auto out = at::empty(v.sizes(), v.options().dtype(at::kInt));
  const float* x = v.data_ptr<float>();
  int32_t* q = out.data_ptr<int32_t>();
  at::parallel_for(0, v.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int32_t n = 0;
      for (int j = 0; j < 15; ++j) n += x[i] > b[j];
      q[i] = n;
    }
  });
  return out;
}

}  // namespace

at::Tensor dynamic_map(bool is_signed) {
  // create_dynamic_map(signed, max_exponent_bits=7, total_bits=8) with the same ATen ops, so the fp32 values
  // come out identical: for exponent i, the midpoints of a linspace(0.1, 1) scaled by 10^(i-6), mirrored for
  // signed maps; then 0 and 1, sorted.
  constexpr int kMaxExponentBits = 7, kNonSignBits = 7;
  std::vector<double> data;
  for (int i = 0; i < kMaxExponentBits; ++i) {
    const int64_t items =
        (int64_t{1} << (i + kNonSignBits - kMaxExponentBits + (is_signed ? 0 : 1))) + 1;
    auto boundaries = at::linspace(0.1, 1, items, at::kFloat);
    auto means = (boundaries.narrow(0, 0, items - 1) + boundaries.narrow(0, 1, items - 1)) / 2.0;
    const double scale = std::pow(10.0, -(kMaxExponentBits - 1) + i);
    auto pos = (means * scale).contiguous();
    data.insert(data.end(), pos.data_ptr<float>(), pos.data_ptr<float>() + pos.numel());
    if (is_signed) {
      auto neg = (means * -scale).contiguous();
      data.insert(data.end(), neg.data_ptr<float>(), neg.data_ptr<float>() + neg.numel());
    }
  }
  data.push_back(0.0);
  data.push_back(1.0);
  data.resize(256, 0.0);  // both maps already hold 256 values; kept as bitsandbytes pads
  std::sort(data.begin(), data.end());
  return at::tensor(data, at::kDouble).to(at::kFloat);
}

at::Tensor dynamic_map_signed() { return dynamic_map(true); }

Blockwise8 quantize_blockwise_8bit(const at::Tensor& values, const at::Tensor& map, int64_t blocksize) {
  auto x = values.to(at::kCPU, at::kFloat).contiguous().reshape({-1});
  auto code = map.to(at::kCPU, at::kFloat).contiguous();
  if (code.numel() != 256) fail("8-bit blockwise quantization: the map must hold 256 values, got {}", code.numel());
  const int64_t n = x.numel(), blocks = (n + blocksize - 1) / blocksize;
  Blockwise8 out{at::empty({n}, at::kByte), at::empty({blocks}, at::kFloat)};
  const float* a = x.data_ptr<float>();
  const float* c = code.data_ptr<float>();
  uint8_t* q = out.codes.data_ptr<uint8_t>();
  float* absmax = out.absmax.data_ptr<float>();
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t first = b * blocksize, last = std::min(first + blocksize, n);
    float m = -std::numeric_limits<float>::max();
    for (int64_t i = first; i < last; ++i) m = std::fmax(m, std::fabs(a[i]));
    absmax[b] = m;
    for (int64_t i = first; i < last; ++i) {
      const float normed = a[i] / m;
      // The entry at or left of `normed` (the first one standing for -1, as quantize_cpu arranges), then its
      // right neighbour if strictly closer: the exact nearest value, ties to the lower one. bitsandbytes 0.50's
      // native CPU kernel searches approximately (a bucketed lookup) and picks the second-nearest value for a
      // few codes in a thousand; tests/unit/oracle_bnb_4bit_test.cpp checks that those are the only differences.
      int64_t idx = std::upper_bound(c + 1, c + 256, normed) - c - 1;
      if (idx < 255 && std::fabs(normed - c[idx + 1]) < std::fabs(normed - c[idx])) ++idx;
      q[i] = static_cast<uint8_t>(idx);
    }
  }
  return out;
}

Quantize4Options four_bit_options(const LayerQuant& layer) {
  if (layer.format != WeightFormat::NF4 && layer.format != WeightFormat::FP4)
    fail("4-bit quantization: {} is not a 4-bit format", format_name(layer.format));
  return {layer.format == WeightFormat::NF4 ? Format4::NF4 : Format4::FP4, layer.blocksize, layer.double_quant};
}

Quant4State quantize_4bit(const at::Tensor& weight, const Quantize4Options& options) {
  check_blocksize(options.blocksize);
  if (!at::isFloatingType(weight.scalar_type()))
    fail("4-bit quantization needs a floating-point tensor, got {}", c10::toString(weight.scalar_type()));
  Quant4State state;
  state.format = options.format;
  state.blocksize = options.blocksize;
  state.shape = weight.sizes().vec();
  state.dtype = weight.scalar_type();
  const auto& book = codebook(options.format);
  state.code = at::tensor(std::vector<float>(book.begin(), book.end()));

  // As bitsandbytes' default quantize_4bit: scale full blocks by the reciprocal of their absmax, the
  // remainder block by division, clamp to [-1, 1], then bucketize against the midpoints of the sorted codes.
  auto flat = weight.detach().to(at::kCPU).reshape({-1}).to(at::kFloat);
  const int64_t n = flat.numel(), bs = options.blocksize, rem = n % bs, full = n - rem;
  // A NaN or inf turns its block's absmax (and, with double quantization, the mean every block is offset by)
  // into garbage: refused, never quantized.
  const auto bad = at::logical_not(at::isfinite(flat));
  if (bad.any().item<bool>()) {
    const int64_t at_index = bad.nonzero()[0][0].item<int64_t>();
    fail("4-bit quantization: the weight holds a non-finite value ({}) at flat index {} (block {})",
         flat[at_index].item<double>(), at_index, at_index / bs);
  }
  at::Tensor absmax, scaled;
  if (full > 0) {
    auto blocks = flat.narrow(0, 0, full).reshape({full / bs, bs});
    absmax = std::get<0>(blocks.abs().max(-1));
    scaled = at::clamp(blocks * (1.0 / absmax.clamp_min(1e-38)).view({-1, 1}), -1, 1).reshape({-1});
  } else {
    absmax = at::empty({0}, at::kFloat);
    scaled = at::empty({0}, at::kFloat);
  }
  if (rem > 0) {
    auto tail = flat.narrow(0, full, rem);
    auto am = tail.abs().max().clamp_min(1e-38);
    absmax = at::cat({absmax, am.unsqueeze(0)});
    scaled = at::cat({scaled, at::clamp(tail / am, -1, 1)});
  }
  if (scaled.numel() % 2 != 0) scaled = at::constant_pad_nd(scaled, {0, 1});
  auto sorted = std::get<0>(state.code.sort());
  auto order = std::get<1>(state.code.sort());
  auto bounds = (sorted.narrow(0, 0, 15) + sorted.narrow(0, 1, 15)) / 2;
  auto q = bucketize_15(scaled, bounds);
  if (options.format != Format4::NF4) q = order.index({q.to(at::kLong)});
  auto q8 = q.to(at::kByte);
  state.packed = at::bitwise_or(at::bitwise_left_shift(q8.slice(0, 0, q8.numel(), 2), 4), q8.slice(0, 1, q8.numel(), 2))
                     .unsqueeze(1)
                     .contiguous();

  if (options.double_quant) {
    // functional.py quantize_4bit(compress_statistics=True): subtract the mean, then 8-bit blocks of 256.
    auto offset = absmax.mean();
    auto map = dynamic_map_signed();
    auto nested = quantize_blockwise_8bit(absmax - offset, map, 256);
    state.nested = NestedAbsmax{nested.codes, nested.absmax, map, 256, offset.item<float>()};
  } else {
    state.absmax = absmax.contiguous();
  }
  return state;
}

double bits_per_parameter(const Quant4State& s) {
  const double n = static_cast<double>(s.numel());
  double extra_bits = 0;
  if (s.nested)
    extra_bits = 8.0 * s.nested->codes.numel() + 32.0 * s.nested->absmax.numel() + 32.0;
  else
    extra_bits = 32.0 * s.absmax.numel();
  return (4.0 * 2 * s.packed.numel() + extra_bits) / n;
}

}  // namespace qtune::quant
