#pragma once
// What each linear costs in the format it is deployed in: one linear at a time replaced by its fake-quantized weight
// (quant/fake_quant.h: the quantizers the exports use, so nf4, intN per group and every GGUF type alike), the mean
// next-token NLL on calibration windows measured against the dense model's. `quant.qat_layers: auto | N` ranks the
// linears by it. (calib/sensitivity.h is the budget planner's scan, which compares NF4 against int8 stores.)
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qtune/quant/fake_quant.h"

namespace qtune::calib {

struct FormatLoss {
  std::string name;          // "model.layers.3.mlp.down_proj"
  std::string format;        // FakeQuantSpec::name() of what it was quantized to
  double loss_increase = 0;  // mean NLL with only this linear quantized, minus the dense model's
};

struct FormatScan {
  double dense_loss = 0;
  int64_t tokens = 0;              // scored (next-token targets) per measurement
  std::vector<FormatLoss> layers;  // the scanned linears, in model order
};

// The deployed format of a linear by its module name; nullopt: not scanned (left dense).
using FormatOf = std::function<std::optional<quant::FakeQuantSpec>(const std::string& module_name)>;
// Called after each linear (index from 1): a real model's scan takes minutes.
using FormatScanProgress = std::function<void(const FormatLoss& done, int64_t index, int64_t total, double seconds)>;

// `model_path`: a Hugging Face directory or a .gguf (dequantized to fp32). `windows`: token sequences, each scored as
// next-token prediction from its first token. The model runs in fp32 on `device`.
FormatScan format_sensitivity_scan(const std::string& model_path, const std::vector<std::vector<int64_t>>& windows,
                                   const FormatOf& format_of, at::Device device = at::kCPU,
                                   const FormatScanProgress& progress = {});

}  // namespace qtune::calib
