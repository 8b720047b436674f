#pragma once
// The 4-bit code books of bitsandbytes (bitsandbytes/functional.py, get_4bit_type), in code order: a 4-bit
// value q stands for kNF4[q] (or kFP4[q]) times its block's absmax.
#include <array>
#include <cstdint>

namespace qtune::quant {

enum class Format4 : uint8_t { NF4, FP4 };

// NF4: quantiles of N(0, 1) normalised to [-1, 1] (QLoRA, Dettmers et al. 2023); sorted ascending.
inline constexpr std::array<float, 16> kNF4 = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// FP4 (e2m1 with bitsandbytes' bias): sign bit 3, then 0, 0.0625, 8, 12, 4, 6, 2, 3 divided by 12; not sorted.
// Code 8 is +0, not -0: bitsandbytes writes it as the Python integer -0.
inline constexpr std::array<float, 16> kFP4 = {
    0.0f / 12, 0.0625f / 12, 8.0f / 12, 12.0f / 12, 4.0f / 12, 6.0f / 12, 2.0f / 12, 3.0f / 12,
    0.0f / 12, -0.0625f / 12, -8.0f / 12, -12.0f / 12, -4.0f / 12, -6.0f / 12, -2.0f / 12, -3.0f / 12};

inline const std::array<float, 16>& codebook(Format4 format) { return format == Format4::NF4 ? kNF4 : kFP4; }

}  // namespace qtune::quant
