#pragma once
// quant.qat_layers: which of the linears quant.qat targets train fake-quantized; the others train as plain QLoRA (or
// plain full fine-tuning), and the export quantizes them from their plain merge as usual.
//   all      every targeted linear (the default)
//   N        the N linears whose deployed format raises the calibration loss most
//   auto     the fewest worst-ranked linears whose loss increases add up to kAutoShare (80%) of the sum of every
//            linear's positive increase (at least one): QAT where PTQ fails, plain QLoRA where it does not
//   globs    the linears the patterns match, with or without the leading "model." (each pattern must match one)
// The ranking (calib/format_sensitivity.h) quantizes one linear at a time to its deployed format (the quant.qat format,
// or the type a GGUF mix gives that layer) and scores quant.scan_tokens tokens of quant.calib, else of the training
// data, in windows of quant.calib_seq_len. It is measured once and cached in the run directory as
// qat-scan-<hash>.json (the hash over the formats, the windows' tokens and the model's files): a resumed run reads it
// back and chooses the same linears. The run's saved recipe names the chosen linears in quant.qat_layers.
#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "qtune/calib/format_sensitivity.h"
#include "qtune/data/tokenizer.h"
#include "qtune/io/hf_config.h"
#include "qtune/train/qat_plan.h"
#include "qtune/train/recipe.h"

namespace qtune::train {

inline constexpr double kAutoShare = 0.8;

enum class QatLayerRule { All, Auto, Count, Patterns };

struct QatLayers {
  QatLayerRule rule = QatLayerRule::All;
  int64_t count = 0;                  // Count
  std::vector<std::string> patterns;  // Patterns
  bool needs_ranking() const { return rule == QatLayerRule::Auto || rule == QatLayerRule::Count; }
  std::string describe() const;       // "auto", "the 4 worst", "2 patterns"
};

// quant.qat_layers checked against the rest of the quant section; errors name `where` (the recipe) and the key.
QatLayers parse_qat_layers(const QuantSection& quant, const std::string& where);

// The token windows the ranking scores (see above).
std::vector<std::vector<int64_t>> qat_scan_windows(const Recipe& recipe, const data::Tokenizer& tokenizer);

// The linears `qat` fake-quantizes, in model order.
std::vector<std::string> qat_linears(const io::ModelConfig& config, const RunQat& qat);

// The ranking of those linears: read from the run directory's cache, else measured now on `device` and cached.
// Progress goes to `out` (may be null).
calib::FormatScan qat_ranking(const Recipe& recipe, const io::ModelConfig& config, const RunQat& qat, at::Device device,
                              std::FILE* out);

// qat_ranking for the recipe as a run sets it up (its config, QAT plan and device): what rank 0 of a data-parallel run
// measures before the others read it. Returns the run directory that holds it.
std::string rank_qat_layers(const Recipe& recipe, std::FILE* out);

// The linears `rule` picks among `linears` (model order), in model order; `ranking` (auto | N) covers them all.
std::vector<std::string> choose_qat_layers(const QatLayers& rule, const std::vector<std::string>& linears,
                                           const calib::FormatScan* ranking, const std::string& where);

// `qat` with fake quantization only in `chosen`.
RunQat restrict_qat(RunQat qat, const std::vector<std::string>& chosen, const std::string& rule);

// What a run applies: `qat` limited by recipe.quant.qat_layers (unchanged for all), which becomes the list of the
// chosen linears (what the run's saved recipe records). Prints the choice to `out`.
RunQat apply_qat_layers(Recipe& recipe, const io::ModelConfig& config, RunQat qat, at::Device device, std::FILE* out);

}  // namespace qtune::train
