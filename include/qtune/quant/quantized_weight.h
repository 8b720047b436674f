#pragma once
// A frozen weight stored in fewer bits, seen through one interface: the autograd Function and the
// quantized linear dequantize through it without knowing the format. Held by intrusive_ptr so the autograd
// graph can keep it alive (as an IValue capsule) without saving any dense tensor.
#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>

#include <string>

#include "qtune/quant/int8.h"
#include "qtune/quant/quant_state.h"

namespace qtune::quant {

class QuantizedWeight : public torch::CustomClassHolder {
 public:
  // Dense [out_features, in_features] in `dtype` on the weight's device.
  virtual at::Tensor dequantize(at::ScalarType dtype) const = 0;
  virtual int64_t out_features() const = 0;
  virtual int64_t in_features() const = 0;
  virtual std::string format() const = 0;          // "nf4", "fp4", "int8"
  virtual int64_t storage_bytes() const = 0;       // codes and scales
  virtual void to(at::Device device) = 0;
  virtual at::Device device() const = 0;           // where the codes live
  double bits_per_parameter() const {
    return 8.0 * static_cast<double>(storage_bytes()) / static_cast<double>(out_features() * in_features());
  }
};

class Quant4Weight : public QuantizedWeight {
 public:
  explicit Quant4Weight(Quant4State state);
  at::Tensor dequantize(at::ScalarType dtype) const override;
  int64_t out_features() const override { return state_.shape.at(0); }
  int64_t in_features() const override { return state_.shape.at(1); }
  std::string format() const override { return state_.format == Format4::NF4 ? "nf4" : "fp4"; }
  int64_t storage_bytes() const override;
  void to(at::Device device) override;
  at::Device device() const override { return state_.packed.device(); }
  const Quant4State& state() const { return state_; }

 private:
  Quant4State state_;
};

class Int8Weight : public QuantizedWeight {
 public:
  explicit Int8Weight(Int8State state);
  at::Tensor dequantize(at::ScalarType dtype) const override;
  int64_t out_features() const override { return state_.rows(); }
  int64_t in_features() const override { return state_.cols(); }
  std::string format() const override { return "int8"; }
  int64_t storage_bytes() const override;
  void to(at::Device device) override;
  at::Device device() const override { return state_.codes.device(); }
  const Int8State& state() const { return state_; }

 private:
  Int8State state_;
};

}  // namespace qtune::quant
