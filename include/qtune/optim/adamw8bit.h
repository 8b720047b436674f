#pragma once
// bitsandbytes' 8-bit AdamW (bnb.optim.AdamW8bit, Dettmers et al. 2022, "8-bit Optimizers via Block-wise
// Quantization"): both moments are stored as 8-bit codes in blocks of 256 with one fp32 absmax per block. The first
// moment (signed) uses the signed dynamic map, the second (never negative) the unsigned one, which spends the sign
// bit on precision. Each step dequantizes, updates in fp32 and requantizes, in the order and rounding of
// bitsandbytes 0.50's CPU backend (backends/cpu/ops.py _optimizer_update_8bit_blockwise_cpu, csrc/cpu_ops.cpp
// quantize_cpu_impl), so on the CPU params, codes and absmax equal bitsandbytes' bit for bit
// (tests/oracle/bnb_adamw8bit.py). Parameters with fewer than 4096 elements keep fp32 state and bitsandbytes'
// 32-bit update: for them the codes would save little, and small tensors (biases, norms) are the most sensitive
// to quantization noise. The same ATen ops run on a GPU (bitsandbytes' CUDA kernel differs in the last bits: it
// applies the decay after the update and searches the map exactly).
#include "qtune/optim/optimizer.h"

namespace qtune::optim {

inline constexpr int64_t kStateBlockSize = 256;  // elements per absmax block (bitsandbytes' fixed block size)
inline constexpr int64_t kMin8bitSize = 4096;    // smaller parameters keep fp32 state (bitsandbytes' min_8bit_size)

// One moment quantized blockwise: codes index the map, times the block's absmax.
struct BlockwiseState {
  at::Tensor codes;   // uint8 [n]
  at::Tensor absmax;  // fp32 [ceil(n / 256)]
};

// Blockwise quantization of a flat fp32 tensor as bitsandbytes' CPU backend does it: absmax per block, x times
// 1/absmax clamped to [-1, 1], then the code of the nearest map value read from a 65536-entry table over [-1, 1]
// (so values within about 1.5e-5 of a midpoint between two codes may take the farther one, as in bitsandbytes).
// A block whose absmax is 0 gets code 0; NaN counts as 0 for the absmax and gets code 0.
class BlockwiseQuantizer {
 public:
  explicit BlockwiseQuantizer(at::Tensor map);  // 256 sorted fp32 values
  void quantize(const at::Tensor& values, BlockwiseState& into) const;  // on the state's device
  at::Tensor dequantize(const BlockwiseState& state) const;             // fp32 [n]
  const at::Tensor& map() const { return map_; }

 private:
  at::Tensor map_;    // fp32 [256]
  at::Tensor table_;  // uint8 [65536]: the code nearest to -1 + 2 i / 65535
};

class AdamW8bit : public Optimizer {
 public:
  AdamW8bit(NamedParams params, AdamWOptions options, bool paged = false);
  void step(double lr) override;
  std::string kind() const override { return paged_ ? "paged_adamw_8bit" : "adamw_8bit"; }
  bool is_quantized(size_t param_index) const { return slots_.at(param_index).quantized; }

 protected:
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const override;

 private:
  struct Slot {
    bool quantized = false;
    BlockwiseState exp_avg, exp_avg_sq;   // when quantized
    at::Tensor exp_avg_f32, exp_avg_sq_f32;  // otherwise, the parameter's shape
  };
  void step_quantized(const at::Tensor& p, const at::Tensor& grad, Slot& slot, const AdamWOptions& o, int64_t step,
                      double lr) const;
  void step_fp32(const at::Tensor& p, const at::Tensor& grad, Slot& slot, const AdamWOptions& o, int64_t step,
                 double lr) const;

  struct Quantizers {
    BlockwiseQuantizer exp_avg, exp_avg_sq;  // signed map, unsigned map
  };
  const Quantizers& quantizers_for(at::Device device) const;

  bool paged_;
  std::vector<Slot> slots_;
  // One pair per device the parameters are on: the maps and tables live beside the state they decode.
  std::vector<std::pair<at::Device, Quantizers>> quantizers_;
};

// Bytes of 8-bit AdamW state for one parameter of `numel` elements.
int64_t adamw8bit_state_bytes(int64_t numel);

}  // namespace qtune::optim
