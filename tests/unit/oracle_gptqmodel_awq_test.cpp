// qtune's AWQ against gptqmodel's (tests/oracle/gptqmodel_awq.py): on one weight and its inputs, AWQ's grid, weight
// mean, clipping search and scale search give gptqmodel's results bit for bit; qtune loads gptqmodel's AWQ
// checkpoints with transformers' dequantized weights and logits; transformers + gptqmodel load qtune's AWQ checkpoint
// with qtune's logits; and qtune's whole-model run is as good as gptqmodel's on the same tokens.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qtune/calib/layerwise_awq.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/awq.h"
#include "qtune/quant/awq_format.h"
#include "test_util.h"

namespace qtune {
namespace {

const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

std::string oracle() { return test::oracle_dir() + "/gptqmodel_awq"; }

const std::vector<int64_t> kProbe{1, 5, 9, 77, 200, 13, 42, 3, 250, 128, 64, 7, 99, 31, 180, 2};

at::Tensor probe_logits(nn::CausalLMImpl& m) {
  torch::NoGradGuard no_grad;
  m.eval();
  return m.forward(at::tensor(kProbe, at::kLong).view({1, -1}));
}

double max_rel(const at::Tensor& a, const at::Tensor& ref) {
  return (a - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

std::vector<std::vector<int64_t>> calibration() {
  return io::read_json_file(oracle() + "/calibration.json").get<std::vector<std::vector<int64_t>>>();
}

TEST(OracleGptqmodelAwq, GridWeightMeanClippingAndScaleSearchAreGptqmodelsBitForBit) {
  const auto file = io::SafetensorsFile::open(oracle() + "/pieces.safetensors");
  const auto w = file->tensor("W"), w2 = file->tensor("W2"), x = file->tensor("X");
  const auto cases = io::read_json_file(oracle() + "/pieces.json");
  ASSERT_EQ(cases.size(), 3u);
  const auto x_mean = quant::awq_activation_mean({x});
  EXPECT_TRUE(test::bitwise_equal(x_mean, file->tensor("x_mean")));
  for (const auto& c : cases) {
    const std::string name = c["name"];
    quant::AwqOptions o;
    o.grid = {4, c["group_size"].get<int64_t>(), c["sym"].get<bool>()};
    EXPECT_TRUE(test::bitwise_equal(quant::awq_fake_quantize(w, o.grid), file->tensor(name + ".values"))) << name;
    const auto q = quant::awq_quantize(w, o.grid);
    EXPECT_TRUE(test::bitwise_equal(q.scales.t().contiguous(), file->tensor(name + ".scales"))) << name;
    EXPECT_TRUE(test::bitwise_equal(q.zeros.t().to(at::kFloat).contiguous(), file->tensor(name + ".zeros"))) << name;
    // The same values (gptqmodel's symmetric grid writes −0 where code − zero is 0; equal, not bitwise).
    EXPECT_TRUE(at::equal(q.dequantize(), file->tensor(name + ".values"))) << name;
    EXPECT_TRUE(test::bitwise_equal(quant::awq_weight_mean({w, w2}, o.grid.group_size), file->tensor(name + ".weight_mean")))
        << name;
    EXPECT_TRUE(test::bitwise_equal(quant::awq_clip_bounds(w, x, o), file->tensor(name + ".clip"))) << name;
    // The scale search with W alone as the block: the same candidates, losses and winner.
    const auto reference = at::linear(x, w);
    const auto found = quant::awq_search_scales(x_mean, quant::awq_weight_mean({w}, o.grid.group_size), o,
                                                [&](const at::Tensor& s) {
                                                  const auto sv = s.view({1, -1});
                                                  const auto fq = quant::awq_fake_quantize(w * sv, o.grid) / sv;
                                                  return (reference - at::linear(x, fq)).pow(2).sum().item<double>() /
                                                         static_cast<double>(reference.numel());
                                                });
    EXPECT_TRUE(test::bitwise_equal(found.scales, file->tensor(name + ".best_scales"))) << name;
    EXPECT_NEAR(found.loss, c["loss"].get<double>(), 1e-6 * c["loss"].get<double>()) << name;
  }
}

// Every AWQ linear of `m` dequantized to fp16 equals gptqmodel's dequantize_gemm (which multiplies in fp16) bit for
// bit; the logits agree within what that rounding allows (qtune's fp32 model multiplies by the exact fp32 product
// of code and fp16 scale, the oracle by its fp16 rounding).
void expect_same_model(nn::CausalLMImpl& m, const std::string& reference_file, const std::string& what) {
  const auto ref = io::SafetensorsFile::open(reference_file);
  int64_t compared = 0;
  for (const auto& item : m.named_modules()) {
    auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value());
    if (!q || !ref->find(item.key() + ".dequantized")) continue;
    EXPECT_EQ(q->weight().format().rfind("awq-int4-g", 0), 0u) << item.key();
    EXPECT_TRUE(test::bitwise_equal(q->weight().dequantize(at::kHalf).to(at::kFloat),
                                    ref->tensor(item.key() + ".dequantized")))
        << what << " " << item.key();
    ++compared;
  }
  EXPECT_EQ(compared, 14) << what;
  EXPECT_LT(max_rel(probe_logits(m), ref->tensor("logits")), 2e-3) << what;
}

TEST(OracleGptqmodelAwq, QtuneLoadsGptqmodelsAwqCheckpointsAsTransformersDoes) {
  for (const char* name : {"mha_g32_asym", "gqa_g64_sym"}) {
    const auto dir = oracle() + "/gptqmodel-" + name;
    auto m = nn::load_causal_lm(dir, kFp32);
    expect_same_model(*m, dir + "/logits.safetensors", name);
  }
}

std::string transformers_load(const std::string& qdir, const std::string& dir) {
  const auto out = dir + "/transformers_logits.safetensors";
  const auto cmd = std::string("OMP_NUM_THREADS=1 ") + QTUNE_TEST_PYTHON + " " + QTUNE_TEST_SOURCE_DIR +
                   "/tests/oracle/gptqmodel_awq.py --load '" + qdir + "' '" + out + "' > '" + dir + "/log.txt' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream in(dir + "/log.txt");
    std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ADD_FAILURE() << "the oracle failed to load " << qdir << ":\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
    return "";
  }
  return out;
}

double probe_loss_gap(const at::Tensor& logits, const at::Tensor& fp_logits) {
  // Mean KL(fp ‖ quantized) over the probe's positions: how far the quantized model's predictions moved.
  const auto p = at::log_softmax(fp_logits, -1), q = at::log_softmax(logits, -1);
  return (p.exp() * (p - q)).sum(-1).mean().item<double>();
}

TEST(OracleGptqmodelAwq, TransformersLoadsQtunesAwqCheckpointAndTheRunIsAsGoodAsGptqmodels) {
  const auto dir = test::temp_dir();
  struct Case {
    const char* name;
    const char* model;
    quant::IntGridOptions grid;
  };
  for (const Case& c : {Case{"mha_g32_asym", "tiny-mha", {4, 32, false}}, Case{"gqa_g64_sym", "tiny-gqa", {4, 64, true}}}) {
    calib::AwqRunOptions o;
    o.awq.grid = c.grid;
    o.dtype = at::kFloat;
    const auto qdir = dir + "/qtune-" + c.name;
    const auto report = calib::quantize_to_awq(oracle() + "/" + c.model, calibration(), o, qdir);
    ASSERT_EQ(report.linears.size(), 14u);
    int64_t scaled = 0;
    for (const auto& l : report.linears) scaled += l.ratio >= 0;
    // o_proj is scaled through v_proj only when their shapes agree (no GQA), as AutoAWQ and gptqmodel do.
    EXPECT_EQ(scaled, std::string(c.model) == "tiny-mha" ? 14 : 12) << c.name;
    auto ours = nn::load_causal_lm(qdir, kFp32);
    const auto our_logits = probe_logits(*ours);
    const auto theirs = transformers_load(qdir, dir);
    ASSERT_FALSE(theirs.empty());
    expect_same_model(*ours, theirs, std::string("qtune's ") + c.name);

    // gptqmodel's run on the same tokens moves the probe's predictions as far as qtune's, within 25%: the two differ
    // in gptqmodel's extra weight-mean heuristic (see the oracle's docstring), so codes are not compared.
    const auto fp = io::SafetensorsFile::open(oracle() + "/" + c.model + "/logits.safetensors")->tensor("logits");
    const auto ref = io::SafetensorsFile::open(oracle() + "/gptqmodel-" + c.name + "/logits.safetensors")->tensor("logits");
    const double ours_gap = probe_loss_gap(our_logits, fp), ref_gap = probe_loss_gap(ref, fp);
    EXPECT_GT(ours_gap, 0) << c.name;
    EXPECT_LT(ours_gap, 1.25 * ref_gap) << c.name << ": qtune " << ours_gap << " gptqmodel " << ref_gap;
  }
}

}  // namespace
}  // namespace qtune
