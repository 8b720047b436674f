#pragma once
// Writes a method scan's choice (calib/method_scan.h) as a checkpoint, each linear in its own store's tensors (the
// very weights the scan scored), and says which runtimes load it. The checkpoint is the plainest one that holds the
// methods used: only nf4 (or only int8) and 16bit → bitsandbytes' layout (transformers + bitsandbytes); only gptq
// and 16bit → a GPTQ checkpoint whose 16-bit linears are "-:" rules of quantization_config.dynamic (gptqmodel,
// vLLM); anything else → qtune's own mixed checkpoint (quant/qtune_mixed_format.h), which only qtune loads.
// quant_plan.yaml beside it records each linear's method, bits and measured loss, and the runtimes.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "qtune/calib/method_scan.h"

namespace qtune::calib {

struct Runtimes {
  std::string store;                 // "bitsandbytes", "gptq", "qtune" or "dense"
  std::vector<std::string> loaders;  // "qtune" first
  std::string why;                   // for "qtune": which methods keep the others out
  std::string line() const;          // "qtune, transformers + bitsandbytes" / "qtune only: ..."
};
Runtimes runtimes_for(const std::set<std::string>& methods);

struct MethodPlanRecord {  // what quant_plan.yaml states besides the choice
  double budget_bits = 0;
  double planned_loss = 0;
};

struct MethodCheckpointReport {
  Runtimes runtimes;
  std::map<std::string, int64_t> linears_per_method;
  double bits_per_weight = 0;  // over the decoder linears
  int64_t bytes = 0;           // of the safetensors written
};

// Writes `out_dir` (must not exist; appears complete or not at all). `chosen`: an option index per linear of
// scan.table().
MethodCheckpointReport write_method_checkpoint(const MethodScan& scan, const std::vector<size_t>& chosen,
                                               const MethodPlanRecord& record, const std::string& out_dir);

}  // namespace qtune::calib
