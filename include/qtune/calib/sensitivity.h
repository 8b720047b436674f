#pragma once
// The sensitivity scan behind `qtune quantize --plan auto`: quantize one linear at a time, measure how much the
// calibration loss rises, then keep the most sensitive linears at higher precision until the average bits per
// weight reach the budget. The result is a QuantPlan a recipe can load.
#include <functional>
#include <string>
#include <vector>

#include "qtune/quant/quant_plan.h"

namespace qtune::calib {

struct LayerSensitivity {
  std::string name;
  int64_t parameters = 0;
  double loss_increase = 0;  // calibration mean NLL with only this linear quantized, minus the dense one
  double low_bits = 0, high_bits = 0;
  bool kept_high = false;
};

struct SensitivityOptions {
  quant::LayerQuant low{quant::WeightFormat::NF4, 64, true};  // what every linear gets by default
  quant::WeightFormat high = quant::WeightFormat::Int8;       // what the most sensitive ones are kept in
  double budget_bits = 4.5;                      // average over all linear weights
  int64_t seq_len = 256;                         // calibration windows
  int64_t max_tokens = 4096;                     // calibration tokens used
  // What the budget counts per weight of a linear of [out, in], low or high: by default the scanned formats' own
  // bits; a plan for another store (GPTQ's grids) gives that store's.
  std::function<double(int64_t out, int64_t in, bool high)> bits_of;
  // Called after each linear's measurement (index from 1): the scan takes minutes on a real model.
  std::function<void(const LayerSensitivity& done, int64_t index, int64_t total, double seconds)> progress;
};

struct SensitivityResult {
  double dense_loss = 0;
  double all_low_loss = 0;    // every linear in the low format
  double planned_loss = 0;    // with the chosen plan
  double average_bits = 0;    // of the chosen plan
  std::vector<LayerSensitivity> layers;  // in model order
  quant::QuantPlan plan;
};

// `calibration`: token windows (each starting where the text does) scored as next-token prediction.
SensitivityResult sensitivity_scan(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                                   const SensitivityOptions& options);

}  // namespace qtune::calib
