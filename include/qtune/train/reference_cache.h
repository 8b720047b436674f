#pragma once
// train.precompute_ref_log_probs (TRL's option of that name): the reference's log-probabilities of every row a run
// reads (its train micro-batches over every step, KTO's mismatched pairs, the eval set), computed once before the
// first step and kept in the run directory's ref_logps.safetensors, so a step reads them instead of running the
// reference forward, and a resumed run reads them again instead of recomputing them.
//
// The file holds the rows' keys (ReferenceTable::row_key) and their log-probabilities, and in its metadata the
// fingerprint of what they were computed from (the data's contents, the base's files, the settings that change the
// rows or the reference). A file that is unreadable, has another fingerprint or lacks a row this run reads is
// recomputed, with a note naming why.
#include <cstdint>
#include <functional>
#include <string>

#include "qtune/data/collate.h"
#include "qtune/nn/decoder.h"
#include "qtune/train/objectives/reference_logps.h"

namespace qtune::dist {
class Communicator;
}

namespace qtune::train {

struct Recipe;

inline constexpr const char* kReferenceCacheFile = "ref_logps.safetensors";

// Calls `visit(global, share_rows)` for every global micro-batch the run reads, in the order it reads them; rank r
// computes rows [r * share_rows, (r + 1) * share_rows) of each (its share, as in the step).
using MicroBatchVisitor =
    std::function<void(const std::function<void(const data::Batch& global, int64_t share_rows)>& visit)>;

// What the cached log-probabilities depend on: the data files' contents, the base's files (name, size, modification
// time), and every run-affecting recipe key but those of the optimizer, the schedule, the adapters and the loss.
std::string reference_fingerprint(const Recipe& recipe);

struct PreparedReference {
  ReferenceTable table;
  bool computed = false;  // false: read from the run directory's file
  std::string message;    // what was done
  std::string note;       // why the run directory's file was not reused, when there was one
};

// The table of every row `batches` visits: read from `path` when it is there, readable, of `fingerprint` and holds
// them all, else computed (each rank its share, exchanged over `comm`) and written there by rank 0. Every rank calls it.
PreparedReference prepare_reference(nn::CausalLMImpl& model, const std::string& path, const std::string& fingerprint,
                                    const MicroBatchVisitor& batches, dist::Communicator& comm);

}  // namespace qtune::train
