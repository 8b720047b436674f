#include "qtune/calib/method_checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "qtune/calib/quantized_checkpoint.h"
#include "qtune/io/atomic_file.h"
#include "qtune/io/safetensors.h"
#include "qtune/quant/bnb_format.h"
#include "qtune/quant/gptq_weight.h"
#include "qtune/quant/qtune_mixed_format.h"
#include "qtune/util/error.h"

namespace qtune::calib {
namespace {
namespace fs = std::filesystem;

bool only(const std::set<std::string>& methods, const std::set<std::string>& allowed) {
  for (const auto& m : methods)
    if (!allowed.count(m)) return false;
  return true;
}

at::ScalarType checkpoint_dtype(const io::ModelConfig& config) {
  if (config.torch_dtype == "bfloat16") return at::kBFloat16;
  if (config.torch_dtype == "float16") return at::kHalf;
  return at::kFloat;
}

const char* dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

}  // namespace

std::string Runtimes::line() const {
  if (loaders.size() == 1) return fmt::format("qtune only{}", why.empty() ? "" : ": " + why);
  return fmt::format("{}", fmt::join(loaders, ", "));
}

Runtimes runtimes_for(const std::set<std::string>& methods) {
  Runtimes r;
  r.loaders = {"qtune"};
  if (only(methods, {"16bit"})) {
    r.store = "dense";
    r.loaders.push_back("transformers (a 16-bit model)");
  } else if (only(methods, {"nf4", "16bit"}) || only(methods, {"int8", "16bit"})) {
    r.store = "bitsandbytes";
    r.loaders.push_back("transformers + bitsandbytes");
  } else if (only(methods, {"gptq", "16bit"})) {
    r.store = "gptq";
    r.loaders.push_back("gptqmodel");
    r.loaders.push_back("vLLM");
    if (!methods.count("16bit")) r.loaders.push_back("transformers + gptqmodel");
  } else {
    r.store = "qtune";
    std::vector<std::string> reasons;
    if (methods.count("awq"))
      reasons.push_back("awq keeps its input scale unfused (the linears beside it chose other methods), which no AWQ "
                        "checkpoint holds");
    if (methods.count("nf4") && methods.count("int8"))
      reasons.push_back("nf4 with int8 (transformers' BitsAndBytesConfig holds 4-bit or 8-bit, not both)");
    if (methods.count("gptq") && (methods.count("nf4") || methods.count("int8")))
      reasons.push_back("gptq with bitsandbytes' nf4/int8 (no checkpoint format holds both)");
    r.why = fmt::format("{}", fmt::join(reasons, "; "));
  }
  return r;
}

MethodCheckpointReport write_method_checkpoint(const MethodScan& scan, const std::vector<size_t>& chosen,
                                               const MethodPlanRecord& record, const std::string& out_dir) {
  const auto& table = scan.table();
  if (chosen.size() != table.size()) fail("method checkpoint: a choice for {} linears, the scan has {}", chosen.size(), table.size());
  MethodCheckpointReport report;
  std::set<std::string> used;
  for (size_t i = 0; i < table.size(); ++i) {
    const auto& m = table[i].options.at(chosen[i]).method;
    used.insert(m);
    ++report.linears_per_method[m];
  }
  report.runtimes = runtimes_for(used);
  const auto& store = report.runtimes.store;
  const auto dtype = checkpoint_dtype(scan.config());
  const auto& o = scan.options();

  io::NamedTensors tensors = scan.other_tensors(dtype);
  quant::QtuneMixedConfig mixed;
  quant::GptqConfig gptq;  // the GPTQ store's config
  gptq.grid = o.gptq_grid;
  gptq.checkpoint_format = quant::default_checkpoint_format(gptq);
  std::vector<std::string> dense_linears;
  double bits = 0, params = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    const auto& name = table[i].name;
    const auto& opt = table[i].options[chosen[i]];
    bits += opt.bits * static_cast<double>(table[i].parameters);
    params += static_cast<double>(table[i].parameters);
    mixed.linears[name] = opt.method;
    const auto q = scan.candidate(i, chosen[i]);
    if (!q) {
      // The 16-bit values in the checkpoint's dtype: an fp32 checkpoint holds them widened (transformers computes a
      // skipped linear in the dtype it finds stored, which must be the model's).
      tensors.emplace_back(name + ".weight", scan.dense16(i).to(dtype));
      dense_linears.push_back(name);
      gptq.add_skip(name);
    } else if (auto w4 = dynamic_cast<const quant::Quant4Weight*>(q.get())) {
      quant::append_bnb_4bit(tensors, name + ".weight", w4->state());
    } else if (auto w8 = dynamic_cast<const quant::Int8Weight*>(q.get())) {
      quant::append_bnb_int8(tensors, name, w8->state());
    } else if (auto g = dynamic_cast<const quant::GptqWeight*>(q.get())) {
      // The qtune store keeps zeros as they are (v2); the GPTQ store as its config says.
      quant::append_gptq(tensors, name, g->tensors(), g->grid().bits,
                         store == "gptq" ? gptq.checkpoint_format : quant::GptqCheckpointFormat::V2);
      if (g->input_scale().defined()) tensors.emplace_back(name + quant::kAwqInputScale, g->input_scale());
    } else {
      fail("method checkpoint: {} holds a {} weight, which it has no layout for", name, q->format());
    }
  }
  report.bits_per_weight = params > 0 ? bits / params : 0;

  nlohmann::json qc;  // null: a dense model
  if (store == "bitsandbytes") {
    std::optional<quant::LayerQuant> four_bit;
    if (used.count("nf4")) four_bit = quant::LayerQuant{quant::WeightFormat::NF4, o.nf4_blocksize, true};
    dense_linears.push_back("lm_head");
    qc = quant::bnb_quantization_config(four_bit, used.count("int8") > 0, dtype_name(dtype), dense_linears);
  } else if (store == "gptq") {
    qc = gptq.to_json();
  } else if (store == "qtune") {
    if (used.count("gptq")) {
      mixed.gptq.emplace();
      mixed.gptq->grid = o.gptq_grid;
      mixed.gptq->checkpoint_format = quant::GptqCheckpointFormat::V2;
    }
    if (used.count("awq")) {
      mixed.awq.emplace();
      mixed.awq->grid = o.awq.grid;
      mixed.awq->checkpoint_format = quant::GptqCheckpointFormat::V2;
    }
    mixed.loadable_by = report.runtimes.loaders;
    mixed.why = report.runtimes.why;
    qc = mixed.to_json();
  }

  std::string yaml = fmt::format(
      "# qtune quantize --method auto: each decoder linear's method (chosen by calibration loss per bit), its bits per\n"
      "# weight and the calibration loss it adds when it alone is stored so.\n"
      "store: {}\nloadable_by: [{}]\n{}budget_bits: {}\naverage_bits: {:.4f}\ncalibration_loss: {{dense: {:.6f}, plan: "
      "{:.6f}}}\nlinears:\n",
      store, fmt::join(report.runtimes.loaders, ", "),
      report.runtimes.why.empty() ? "" : fmt::format("why: \"{}\"\n", report.runtimes.why), record.budget_bits,
      report.bits_per_weight, scan.dense_loss(), record.planned_loss);
  for (size_t i = 0; i < table.size(); ++i) {
    const auto& opt = table[i].options[chosen[i]];
    yaml += fmt::format("  {}: {{method: {}, bits: {:.4f}, loss_increase: {:.6g}}}\n", table[i].name, opt.method,
                        opt.bits, opt.loss);
  }
  write_directory_atomically(out_dir, [&](const std::string& tmp) {
    io::write_safetensors((fs::path(tmp) / "model.safetensors").string(), tensors, {{"format", "pt"}});
    write_model_files(scan.model_dir(), scan.config(), qc, dtype, tmp);
    io::write_text_atomically((fs::path(tmp) / "quant_plan.yaml").string(), yaml);
  });
  report.bytes = static_cast<int64_t>(fs::file_size(fs::path(out_dir) / "model.safetensors"));
  return report;
}

}  // namespace qtune::calib
