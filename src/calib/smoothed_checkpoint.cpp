#include "qtune/calib/smoothed_checkpoint.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "qtune/calib/quantized_checkpoint.h"
#include "qtune/io/atomic_file.h"

namespace qtune::calib {
namespace fs = std::filesystem;

SmoothedCheckpointWriter::SmoothedCheckpointWriter(std::string dir, std::string model_dir, io::ModelConfig config,
                                                   at::ScalarType dtype)
    : dir_(std::move(dir)),
      model_dir_(std::move(model_dir)),
      config_(std::move(config)),
      dtype_(dtype),
      writer_(dir_, int64_t{2} << 30) {}

void SmoothedCheckpointWriter::add(const std::string& name, const at::Tensor& value) {
  writer_.add(name, value.to(dtype_).contiguous());
}

int64_t SmoothedCheckpointWriter::finish(const SmoothQuantOptions& o, const SmoothQuantReport& r) {
  const int64_t bytes = writer_.finish().bytes;
  write_model_files(model_dir_, config_, nullptr, dtype_, dir_);
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers) {
    nlohmann::json searched = nlohmann::json::array();
    for (const auto& [alpha, error] : l.searched) searched.push_back({{"alpha", alpha}, {"error", error}});
    layers.push_back({{"layer", l.layer}, {"alpha", l.alpha}, {"w8a8_block_error", l.error},
                      {"w8a8_block_error_unsmoothed", l.rtn_error}, {"searched", searched}});
  }
  nlohmann::json mappings = nlohmann::json::array();
  for (const auto& m : r.mappings) mappings.push_back({{"smooth", m.smooth}, {"balance", m.balance}});
  const nlohmann::json record = {
      {"method", "smoothquant"},
      {"alpha", o.auto_alpha ? nlohmann::json("auto") : nlohmann::json(o.alpha)},
      {"smooth_down", o.smooth_down},
      {"mappings", mappings},
      {"calibration_sequences", r.calibration_sequences},
      {"calibration_tokens", r.calibration_tokens},
      {"layers", layers},
  };
  io::write_text_atomically((fs::path(dir_) / "smoothquant.json").string(), record.dump(2) + "\n");
  return bytes;
}

}  // namespace qtune::calib
