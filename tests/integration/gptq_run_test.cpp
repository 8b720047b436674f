// qtune quantize --method gptq|rtn end to end on the tiny model: GPTQ beats round-to-nearest on every linear's
// calibration inputs, the checkpoint loads back as GPTQ linears that compute what was written (either zero-point
// convention), QLoRA trains on it and exports a PEFT adapter, and bad input leaves nothing behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "qtune/calib/importance.h"
#include "qtune/calib/layerwise_gptq.h"
#include "qtune/io/json_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/gptq_weight.h"
#include "test_util.h"
#include "tiny_run.h"

namespace qtune::calib {
namespace {

namespace fs = std::filesystem;
const auto kFp32 = at::TensorOptions().dtype(at::kFloat);

std::vector<std::vector<int64_t>> calibration(const train::TinyRun& t, int64_t n = 16) {
  const auto tok = data::Tokenizer::load(t.model);
  return calibration_sequences(t.dir + "/corpus.txt", tok, 64, n);
}

int64_t gptq_linears(nn::CausalLMImpl& m) {
  int64_t n = 0;
  for (const auto& item : m.named_modules()) {
    auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value());
    n += q && dynamic_cast<const quant::GptqWeight*>(&q->weight()) != nullptr;
  }
  return n;
}

double relative_error(const at::Tensor& a, const at::Tensor& ref) {
  return (a - ref).norm().item<double>() / ref.norm().item<double>();
}

TEST(GptqRun, BeatsRoundToNearestOnEveryLinearAndLoadsBackAsGptqLinears) {
  train::TinyRun t;
  const auto seqs = calibration(t);
  GptqRunOptions o;
  o.gptq.grid = {4, 32, true};
  o.dtype = at::kFloat;
  const auto out = t.dir + "/gptq";
  const auto r = quantize_to_gptq(t.model, seqs, o, out);
  ASSERT_EQ(r.linears.size(), 14u);
  for (const auto& l : r.linears) {
    EXPECT_GT(l.rtn_error, 0) << l.name;
    EXPECT_LT(l.error, l.rtn_error) << l.name;
  }
  EXPECT_EQ(r.calibration_tokens, 16 * 64);
  const auto config = io::read_json_file(out + "/config.json");
  EXPECT_EQ(config["quantization_config"]["quant_method"], "gptq");
  EXPECT_EQ(config["quantization_config"]["checkpoint_format"], "gptq");
  EXPECT_FALSE(fs::exists(out + ".tmp"));

  auto dense = nn::load_causal_lm(t.model, kFp32);
  auto gptq = nn::load_causal_lm(out, kFp32);
  EXPECT_EQ(gptq_linears(*gptq), 14);
  const auto ref = train::probe_logits(*dense);
  const double gptq_err = relative_error(train::probe_logits(*gptq), ref);
  EXPECT_LT(gptq_err, 0.2);

  // The same checkpoint with zeros stored as they are (gptq_v2) computes the same logits bit for bit.
  o.checkpoint_format = quant::GptqCheckpointFormat::V2;
  quantize_to_gptq(t.model, seqs, o, t.dir + "/gptq-v2");
  EXPECT_EQ(io::read_json_file(t.dir + "/gptq-v2/config.json")["quantization_config"]["checkpoint_format"], "gptq_v2");
  EXPECT_TRUE(test::bitwise_equal(train::probe_logits(*nn::load_causal_lm(t.dir + "/gptq-v2", kFp32)),
                                  train::probe_logits(*gptq)));

  // Round to nearest needs no calibration and lands further from the dense logits.
  GptqRunOptions rtn = o;
  rtn.rtn = true;
  const auto rr = quantize_to_gptq(t.model, {}, rtn, t.dir + "/rtn");
  EXPECT_EQ(rr.linears.size(), 14u);
  EXPECT_NEAR(rr.bits_per_weight, r.bits_per_weight, 1e-12);
  auto rtn_model = nn::load_causal_lm(t.dir + "/rtn", kFp32);
  EXPECT_GT(relative_error(train::probe_logits(*rtn_model), ref), gptq_err);
}

TEST(GptqRun, ActOrderAndAsymmetricGroupsLoadBack) {
  train::TinyRun t;
  GptqRunOptions o;
  o.gptq.grid = {4, 16, false};
  o.gptq.act_order = true;
  o.true_sequential = false;
  o.dtype = at::kFloat;
  const auto r = quantize_to_gptq(t.model, calibration(t, 8), o, t.dir + "/gptq");
  for (const auto& l : r.linears) EXPECT_LT(l.error, l.rtn_error) << l.name;
  // Zero points stored as they are: gptqmodel loads an asymmetric v1 checkpoint only from its own writer.
  EXPECT_EQ(io::read_json_file(t.dir + "/gptq/config.json")["quantization_config"]["checkpoint_format"], "gptq_v2");
  auto m = nn::load_causal_lm(t.dir + "/gptq", kFp32);
  EXPECT_LT(relative_error(train::probe_logits(*m), train::probe_logits(*nn::load_causal_lm(t.model, kFp32))), 0.2);

  // Asked for v1 anyway, the CLI writes it and says who will not load it.
  const auto cli = test::run_qtune("quantize " + t.model + " --method rtn --asym --group-size 32 --checkpoint-format gptq "
                                   "--out " + t.dir + "/v1");
  ASSERT_EQ(cli.code, 0) << cli.err;
  EXPECT_NE(cli.err.find("warning: --checkpoint-format gptq with --asym: gptqmodel"), std::string::npos) << cli.err;
  EXPECT_EQ(io::read_json_file(t.dir + "/v1/config.json")["quantization_config"]["checkpoint_format"], "gptq");
}

// --plan auto --high 16bit: the budget counts the kept linears at the bits they are written in (fp16), so the checkpoint
// written has the bits per weight the plan reported, within the budget; the table names the stored formats.
TEST(GptqRun, APlanKeepingLinearsIn16BitsKeepsItsBudget) {
  train::TinyRun t;
  const auto out = t.dir + "/gptq";
  const auto r = test::run_qtune("quantize " + t.model + " --method gptq --plan auto --high 16bit --budget-bits 6 "
                                 "--calib " + t.dir + "/corpus.txt --calib-samples 4 --calib-seq-len 64 --calib-tokens "
                                 "128 --group-size 32 --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  auto figure = [&](const std::string& before) {
    const auto at = r.out.find(before);
    EXPECT_NE(at, std::string::npos) << r.out;
    return at == std::string::npos ? 0.0 : std::stod(r.out.substr(at + before.size()));
  };
  const double planned = figure("linears in 16bit, ");
  const double written = figure("linears at ");
  EXPECT_LE(planned, 6.0);
  EXPECT_GT(planned, 4.5) << "some linears kept";
  EXPECT_NEAR(written, planned, 1.5e-3) << r.out;  // both printed to 3 decimals
  EXPECT_NE(r.out.find("  gptq-int4\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("  nf4\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  16bit\n"), std::string::npos) << r.out;
}

// A NaN weight is refused at the linear that holds it, by round to nearest (which would write a NaN fp16 scale) and by
// GPTQ (which would spread it to the next layer's Hessian and fail there, misleadingly).
TEST(GptqRun, ANonFiniteWeightIsRefusedAtItsLinear) {
  train::TinyRun t;
  const auto file = t.model + "/model.safetensors";
  {
    auto source = io::SafetensorsFile::open(file);
    io::NamedTensors all;
    for (const auto& info : source->tensors()) {
      auto x = source->tensor(info.name).clone();
      if (info.name == "model.layers.0.mlp.up_proj.weight") x[5][9] = NAN;
      all.emplace_back(info.name, x);
    }
    source.reset();
    io::write_safetensors(file, all, {{"format", "pt"}});
  }
  GptqRunOptions o;
  o.gptq.grid = {4, 32, true};
  for (const bool rtn : {true, false}) {
    o.rtn = rtn;
    const auto out = t.dir + (rtn ? "/rtn" : "/gptq");
    const auto msg = test::error_of([&] { quantize_to_gptq(t.model, rtn ? decltype(calibration(t)){} : calibration(t, 2), o, out); });
    EXPECT_NE(msg.find("model.layers.0.mlp.up_proj: "), std::string::npos) << msg;
    EXPECT_NE(msg.find("non-finite value (nan) at row 5, column 9"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(out));
  }
}

// stories260K's MLP is 172 wide, which 4-bit codes cannot fill int32 words with: refused before any linear is
// calibrated, naming every such linear and --keep-16bit; kept in 16 bits, the rest quantizes.
TEST(GptqRun, ALinearTheLayoutCannotHoldIsRefusedBeforeAnyWork) {
  QTUNE_REQUIRE_SHARED();
  const auto stories = test::shared_dir() + "/models/stories260K";
  const auto dir = test::temp_dir();
  const auto tok = data::Tokenizer::load(stories);
  const auto seqs = calibration_sequences(test::shared_dir() + "/data/tinystories_valid_head.txt", tok, 64, 2);
  GptqRunOptions o;
  o.gptq.grid = {4, 32, true};
  int64_t calibrated = 0;
  const auto msg = test::error_of([&] {
    quantize_to_gptq(stories, seqs, o, dir + "/gptq", [&](const GptqLinearReport&, int64_t, int64_t) { ++calibrated; });
  });
  EXPECT_EQ(calibrated, 0);
  EXPECT_NE(msg.find("GPTQ cannot store 15 linear(s)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.0.mlp.gate_proj"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[64, 172] on int4 g32: 172 inputs are not a multiple of 8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--keep-16bit"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir + "/gptq.tmp"));

  // The CLI says so before its calibration and sensitivity scan.
  const auto cli = test::run_qtune("quantize " + stories + " --method gptq --plan auto --group-size 32 --calib " +
                                   test::shared_dir() + "/data/tinystories_valid_head.txt --out " + dir + "/cli");
  EXPECT_EQ(cli.code, 1);
  EXPECT_NE(cli.err.find("GPTQ cannot store 15 linear(s)"), std::string::npos) << cli.err;
  EXPECT_EQ(cli.out.find("calibration:"), std::string::npos) << cli.out;

  o.keep_dense = {};
  for (int64_t l = 0; l < 5; ++l)
    for (const char* m : {"gate_proj", "up_proj", "down_proj"}) o.keep_dense.insert(fmt::format("model.layers.{}.mlp.{}", l, m));
  const auto r = quantize_to_gptq(stories, seqs, o, dir + "/kept");
  EXPECT_EQ(r.linears.size(), 35u);
  EXPECT_EQ(gptq_linears(*nn::load_causal_lm(dir + "/kept", kFp32)), 20);
}

TEST(GptqRun, AMixedPlanWritesEightBitAndUnquantizedLinearsThatLoadBackAsPlanned) {
  train::TinyRun t;
  const auto seqs = calibration(t, 8);
  GptqRunOptions o;
  o.gptq.grid = {4, 32, true};
  o.dtype = at::kFloat;
  quantize_to_gptq(t.model, seqs, o, t.dir + "/uniform");
  o.linear_grids["model.layers.0.mlp.down_proj"] = {8, 32, true};
  o.linear_grids["model.layers.1.mlp.down_proj"] = {8, 32, true};
  o.keep_dense.insert("model.layers.0.self_attn.v_proj");
  const auto out = t.dir + "/mixed";
  const auto r = quantize_to_gptq(t.model, seqs, o, out);
  std::map<std::string, int> bits;
  for (const auto& l : r.linears) bits[l.name] = l.bits;
  EXPECT_EQ(bits["model.layers.0.mlp.down_proj"], 8);
  EXPECT_EQ(bits["model.layers.0.self_attn.v_proj"], 0);
  EXPECT_EQ(bits["model.layers.1.self_attn.q_proj"], 4);
  EXPECT_EQ(io::read_json_file(out + "/config.json")["quantization_config"]["dynamic"].size(), 3u);

  auto m = nn::load_causal_lm(out, kFp32);
  std::map<std::string, std::string> formats;
  for (const auto& item : m->named_modules())
    if (auto q = std::dynamic_pointer_cast<nn::QuantizedLinearImpl>(item.value())) formats[item.key()] = q->weight().format();
  EXPECT_EQ(formats["model.layers.0.mlp.down_proj"], "gptq-int8-g32");
  EXPECT_EQ(formats["model.layers.1.self_attn.q_proj"], "gptq-int4-g32");
  EXPECT_EQ(formats.count("model.layers.0.self_attn.v_proj"), 0u);  // a plain weight, exactly the source's
  EXPECT_EQ(formats.size(), 13u);
  const auto ref = train::probe_logits(*nn::load_causal_lm(t.model, kFp32));
  EXPECT_LT(relative_error(train::probe_logits(*m), ref),
            relative_error(train::probe_logits(*nn::load_causal_lm(t.dir + "/uniform", kFp32)), ref));
  EXPECT_GT(r.bits_per_weight, 4.5);
}

TEST(GptqRun, QloraTrainsOnAGptqBaseAndExportsAPeftAdapter) {
  train::TinyRun t;
  GptqRunOptions o;
  o.gptq.grid = {4, 32, true};
  quantize_to_gptq(t.model, calibration(t, 8), o, t.dir + "/gptq");
  auto recipe = t.recipe({"model.path=" + t.dir + "/gptq", "train.max_steps=12"});
  const auto s = train::run_training(recipe, train::quiet());
  EXPECT_LT(s.last_loss, s.first_loss);
  EXPECT_TRUE(fs::exists(s.adapter_dir + "/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(s.adapter_dir + "/adapter_config.json"));
}

TEST(GptqRun, BadInputIsAClearErrorAndLeavesNothingBehind) {
  train::TinyRun t;
  GptqRunOptions o;
  const auto out = t.dir + "/gptq";
  EXPECT_NE(test::error_of([&] { quantize_to_gptq(t.model, {}, o, out); }).find("needs calibration sequences"),
            std::string::npos);
  o.gptq.grid.group_size = 48;  // 64 inputs are not a multiple of 48
  const auto msg = test::error_of([&] { quantize_to_gptq(t.model, calibration(t, 2), o, out); });
  EXPECT_NE(msg.find("not a multiple of the group size 48"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.0.self_attn."), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  o.gptq.grid.group_size = 32;
  EXPECT_NE(test::error_of([&] { quantize_to_gptq(t.model, {{1, 2, 100000}}, o, out); }).find("outside the vocabulary"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(out + ".tmp"));

  // CLI: calibration text too short for N × L, and a corrupt checkpoint (g_idx out of range).
  const auto cli = test::run_qtune("quantize " + t.model + " --method gptq --calib " + t.dir +
                                   "/corpus.txt --calib-samples 100000 --calib-seq-len 64 --out " + out);
  EXPECT_NE(cli.code, 0);
  EXPECT_NE(cli.err.find("--calib-samples asks for 100000"), std::string::npos) << cli.err;
  quantize_to_gptq(t.model, calibration(t, 2), o, out);
  auto tensors = io::SafetensorsFile::open(out + "/model.safetensors");
  io::NamedTensors all;
  for (const auto& info : tensors->tensors()) {
    auto x = tensors->tensor(info.name).clone();
    if (info.name == "model.layers.1.mlp.down_proj.g_idx") x.fill_(9);
    all.emplace_back(info.name, x);
  }
  tensors.reset();
  io::write_safetensors(out + "/model.safetensors", all, {{"format", "pt"}});
  const auto bad = test::error_of([&] { nn::load_causal_lm(out, kFp32); });
  EXPECT_NE(bad.find("model.layers.1.mlp.down_proj.g_idx: holds groups 9"), std::string::npos) << bad;
}

}  // namespace
}  // namespace qtune::calib
