// qtune's GPTQ against gptqmodel's (tests/oracle/gptqmodel_gptq.py): one linear, the same weight and Hessian, gives
// the same values, scales, zeros and g_idx bit for bit in every setting; qtune loads gptqmodel's checkpoints with
// transformers' logits; transformers + gptqmodel load qtune's checkpoint with qtune's logits; and the whole-model
// run on the same calibration tokens agrees with gptqmodel's up to the tolerance stated below.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "qtune/calib/layerwise_gptq.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/gptq.h"
#include "qtune/quant/gptq_format.h"
#include "gptqmodel_load.h"
#include "test_util.h"

namespace qtune {
namespace {

namespace fs = std::filesystem;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

std::string oracle() { return test::oracle_dir() + "/gptqmodel"; }

at::Tensor stored_logits(const std::string& file) { return io::SafetensorsFile::open(file)->tensor("logits").clone(); }

double max_rel(const at::Tensor& a, const at::Tensor& ref) {
  return (a - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

std::vector<std::vector<int64_t>> calibration() {
  return io::read_json_file(oracle() + "/calibration.json").get<std::vector<std::vector<int64_t>>>();
}

TEST(OracleGptqmodel, OneLinearGivesGptqmodelsValuesScalesZerosAndGroupsBitForBit) {
  const auto file = io::SafetensorsFile::open(oracle() + "/layers.safetensors");
  const auto w = file->tensor("W"), h = file->tensor("H");
  const auto cases = io::read_json_file(oracle() + "/layers.json");
  ASSERT_GE(cases.size(), 8u);
  // LAPACK's and BLAS's results depend on their thread count: one thread on both sides (the oracle sets it too).
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  for (const auto& c : cases) {
    const std::string name = c["name"];
    quant::GptqOptions o;
    o.grid = {c["bits"].get<int>(), c["group_size"].get<int64_t>(), c["sym"].get<bool>()};
    o.act_order = c["act_order"];
    o.static_groups = c["static_groups"];
    const auto r = quant::gptq_quantize(w, h, o);
    EXPECT_TRUE(test::bitwise_equal(r.dequantized, file->tensor(name + ".Q"))) << name;
    EXPECT_TRUE(test::bitwise_equal(r.quantized.scales, file->tensor(name + ".scale"))) << name;
    EXPECT_TRUE(test::bitwise_equal(r.quantized.zeros.to(at::kFloat), file->tensor(name + ".zero"))) << name;
    EXPECT_TRUE(at::equal(r.quantized.g_idx, file->tensor(name + ".g_idx"))) << name;
    EXPECT_EQ(r.damp, c["damp"].get<double>()) << name;
  }
  at::set_num_threads(threads);
}

// Every GPTQ linear of `m` dequantized to fp16 equals gptqmodel's dequantize_weight() (which multiplies in the fp16
// of the scales) bit for bit; and the logits agree within what that fp16 rounding allows: gptqmodel's torch kernel
// multiplies by the fp16-rounded weight even in an fp32 model, qtune by the exact fp32 product (rounded to fp16 when
// the model runs in fp16, which is then the same value).
void expect_same_model(nn::CausalLMImpl& m, const std::string& reference_file, const std::string& what,
                       int64_t gptq_linears = 14) {
  const auto ref = io::SafetensorsFile::open(reference_file);
  int64_t compared = 0;
  for (const auto& item : m.named_modules()) {
    auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value());
    if (!q || !ref->find(item.key() + ".dequantized")) continue;
    EXPECT_TRUE(test::bitwise_equal(q->weight().dequantize(at::kHalf), ref->tensor(item.key() + ".dequantized")))
        << what << " " << item.key();
    ++compared;
  }
  EXPECT_EQ(compared, gptq_linears) << what;
  EXPECT_LT(max_rel(test::gptqmodel_probe_logits(m), ref->tensor("logits")), 2e-3) << what;
}

TEST(OracleGptqmodel, QtuneLoadsGptqmodelsCheckpointsAsTransformersDoes) {
  for (const std::string name : {"g32_sym", "g32_asym_act", "g16_asym_v2", "g32_sym_mixed", "g32_asym_mixed"}) {
    const auto dir = oracle() + "/gptqmodel-" + name;
    auto m = nn::load_causal_lm(dir, kFp32);
    // The mixed plan (quantization_config.dynamic): one linear on the 8-bit grid, one left unquantized.
    expect_same_model(*m, dir + "/logits.safetensors", name, name.find("mixed") != std::string::npos ? 13 : 14);
  }
}

TEST(OracleGptqmodel, TransformersLoadsQtunesCheckpointWithQtunesLogitsAndTheRunAgreesWithGptqmodels) {
  const auto dir = test::temp_dir();
  struct Case {
    const char* name;
    quant::IntGridOptions grid;
    bool act_order;
    std::optional<quant::GptqCheckpointFormat> format;  // nullopt: qtune's default for the grid
    bool mixed = false;
  };
  for (const Case& c : {Case{"g32_sym", {4, 32, true}, false, quant::GptqCheckpointFormat::V1},
                        Case{"g32_asym_act", {4, 32, false}, true, quant::GptqCheckpointFormat::V1},
                        Case{"g16_asym_v2", {4, 16, false}, false, quant::GptqCheckpointFormat::V2},
                        Case{"g32_sym_mixed", {4, 32, true}, false, quant::GptqCheckpointFormat::V1, true},
                        // What qtune writes for an asymmetric plan unless told otherwise: gptqmodel loads it.
                        Case{"g32_asym_mixed", {4, 32, false}, false, std::nullopt, true}}) {
    calib::GptqRunOptions o;
    o.gptq.grid = c.grid;
    o.gptq.act_order = c.act_order;
    o.checkpoint_format = c.format;
    if (c.mixed) {  // the oracle's MIXED
      o.linear_grids["model.layers.0.mlp.down_proj"] = {8, 32, true};
      o.keep_dense.insert("model.layers.1.self_attn.q_proj");
    }
    o.dtype = at::kFloat;
    const auto qdir = dir + "/qtune-" + c.name;
    calib::quantize_to_gptq(oracle() + "/tiny", calibration(), o, qdir);
    auto ours = nn::load_causal_lm(qdir, kFp32);
    const auto our_logits = test::gptqmodel_probe_logits(*ours);
    const auto theirs = test::transformers_load_gptq(qdir, dir);
    ASSERT_FALSE(theirs.empty());
    expect_same_model(*ours, theirs, std::string("qtune's ") + c.name, c.mixed ? 13 : 14);

    // The same model, tokens and settings through gptqmodel write the same checkpoint: every packed tensor equal.
    // (Hessians are summed in another order — qtune over batches of sequences, gptqmodel one sequence at a time — and
    // still give the same codes here; on larger models a code at a rounding boundary may flip, see
    // docs/PERFORMANCE.md.)
    const auto ref_dir = oracle() + "/gptqmodel-" + std::string(c.name);
    const auto a = io::SafetensorsFile::open(qdir + "/model.safetensors");
    const auto b = io::SafetensorsFile::open(ref_dir + "/model.safetensors");
    int64_t packed = 0;
    for (const auto& info : a->tensors()) {
      for (const char* suffix : {".qweight", ".qzeros", ".scales", ".g_idx"}) {
        const std::string s = suffix;
        if (info.name.size() > s.size() && info.name.compare(info.name.size() - s.size(), s.size(), s) == 0) {
          EXPECT_TRUE(test::bitwise_equal(a->tensor(info.name), b->tensor(info.name))) << c.name << " " << info.name;
          ++packed;
        }
      }
    }
    EXPECT_EQ(packed, 4 * (c.mixed ? 13 : 14)) << c.name;
    if (c.mixed) {  // the unquantized linear is stored as it was, in both
      EXPECT_TRUE(test::bitwise_equal(a->tensor("model.layers.1.self_attn.q_proj.weight"),
                                      b->tensor("model.layers.1.self_attn.q_proj.weight")));
    }
    EXPECT_LT(max_rel(our_logits, stored_logits(ref_dir + "/logits.safetensors")), 2e-3) << c.name;
  }
}

}  // namespace
}  // namespace qtune
