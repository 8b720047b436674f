#pragma once
// Integer codes packed into int32 words, lowest field first: the word layout GPTQ and AWQ checkpoints share.
#include <ATen/ATen.h>

namespace qtune::quant {

// int64 values 0 … 2^32 − 1 → int32 with the same 32 bits.
at::Tensor as_int32_words(const at::Tensor& unsigned_words);
// values [rows, cols·k] (0 … 2^bits − 1, k = 32 / bits) → int32 [rows, cols], value j of a word at bits·(j % k).
at::Tensor pack_rows(const at::Tensor& values, int bits);
// The inverse: int32 [rows, cols] → int64 [rows, cols·k].
at::Tensor unpack_rows(const at::Tensor& words, int bits);

}  // namespace qtune::quant
