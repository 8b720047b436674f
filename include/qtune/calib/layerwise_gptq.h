#pragma once
// The layer-by-layer driver of GPTQ (and of its round-to-nearest baseline): writes a Hugging Face GPTQ checkpoint
// from a 16-bit model (or a GGUF) and calibration token sequences, holding one decoder layer's dense weights at a
// time. As gptqmodel runs it: the calibration sequences are embedded once; each decoder layer is built dense from
// the memory-mapped checkpoint and run on the current hidden states with every linear recording the Hessian
// H = (2/n) Σ x xᵀ of its inputs; with true_sequential the linears are quantized in four rounds (q/k/v, o, gate/up,
// down), each round's inputs recorded after the previous rounds' weights were replaced by their quantized values;
// the layer's outputs with all its weights quantized (the values GPTQ computed, with fp32 scales, as gptqmodel
// does) become the next layer's inputs. Embeddings, norms and lm_head
// are written unquantized in `dtype`.
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "qtune/io/hf_config.h"
#include "qtune/quant/gptq.h"
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/quant_plan.h"

namespace qtune::calib {

struct GptqRunOptions {
  bool rtn = false;            // round to nearest instead (no calibration forward at all)
  quant::GptqOptions gptq;
  bool true_sequential = true;
  // nullopt: as the grids need (quant::default_checkpoint_format: gptq_v2 once a grid has zero points, else gptq).
  std::optional<quant::GptqCheckpointFormat> checkpoint_format;
  at::ScalarType dtype = at::kHalf;  // the unquantized tensors
  int64_t batch = 8;                 // calibration sequences per forward
  // A mixed plan, by full module name ("model.layers.0.mlp.down_proj"): a grid of its own (written as a
  // quantization_config.dynamic rule, as gptqmodel does), or the weight kept as it is (a "-:" rule).
  std::map<std::string, quant::IntGridOptions> linear_grids;
  std::set<std::string> keep_dense;
};

struct GptqLinearReport {
  std::string name;
  // Mean squared output error ‖(W − Q)X‖² / (n · out) on the calibration inputs of this linear, for the written
  // codes (fp16 scales) and for round-to-nearest on the same grid. Both 0 without calibration (rtn).
  double error = 0, rtn_error = 0;
  double damp = 0;
  int64_t dead_columns = 0;
  int bits = 0;             // of its grid; 0 when kept dense
  double seconds = 0;
};

struct GptqRunReport {
  std::vector<GptqLinearReport> linears;  // in model order
  int64_t calibration_tokens = 0;
  double seconds = 0;
  double bits_per_weight = 0;  // over the quantized linears (codes, zeros, fp16 scales, g_idx)
  int64_t bytes = 0;           // of the checkpoint written
};

struct MixedPlanCounts {
  int64_t eight_bit = 0, kept = 0;
};
// Puts a mixed plan's int8 linears (a sensitivity scan's, or --keep-int8 rules) on the 8-bit grid and keeps its
// 16-bit ones as they are, in `options`; the plan's other formats mean "this method's grid".
MixedPlanCounts apply_mixed_plan(const quant::QuantPlan& plan, const io::ModelConfig& config, GptqRunOptions& options);

// Bits per weight of a GPTQ linear of [out, in] on `grid`: codes, fp16 scales and packed zeros per group, g_idx.
double gptq_bits_per_weight(const quant::IntGridOptions& grid, int64_t out, int64_t in);
// What a sensitivity scan's budget counts for a mixed plan stored by GPTQ on `grid` (SensitivityOptions::bits_of):
// the grid's bits for the low linears; for the high ones the 8-bit grid's, or, when the plan keeps them unquantized
// (`high` Dense: --high 16bit), the bits of the dtype they are written in (`dense_dtype`, GptqRunOptions::dtype).
std::function<double(int64_t out, int64_t in, bool high)> gptq_plan_bits(
    const quant::IntGridOptions& grid, quant::WeightFormat high = quant::WeightFormat::Int8,
    at::ScalarType dense_dtype = at::kHalf);

// Every linear's [out, in] against its grid (`options`' own for the plan's linears; those kept dense skipped), before
// any work: refuses, naming each linear the GPTQ layout cannot hold (codes and zero points fill whole int32 words, the
// groups divide the inputs) and --keep-16bit, rather than failing at the first one after calibrating the layers
// before it. quantize_to_gptq runs it; a caller with a long stage before (a sensitivity scan) runs it first too.
void check_gptq_shapes(const io::ModelConfig& config, const GptqRunOptions& options);

using GptqProgress = std::function<void(const GptqLinearReport& done, int64_t index, int64_t total)>;

// Writes `out_dir` (must not exist; appears complete or not at all). `calibration` may be empty only with rtn.
GptqRunReport quantize_to_gptq(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                               const GptqRunOptions& options, const std::string& out_dir,
                               const GptqProgress& progress = {});

}  // namespace qtune::calib
