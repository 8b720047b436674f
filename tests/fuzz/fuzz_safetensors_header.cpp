// libFuzzer harness for parse_safetensors_header (torch-free, so it builds with clang's sanitizers alone;
// scripts/fuzz.sh builds and runs it). A rejected file must be a qtune::Error; anything else (another
// exception, a crash, an ASan/UBSan report) escapes and is a finding. An accepted header must satisfy what
// SafetensorsReader relies on when it memcpy's and shapes tensors, so a violation traps.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "qtune/io/safetensors_header.h"
#include "qtune/util/error.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_invariants(const qtune::io::SafetensorsHeader& h, size_t size) {
  check(h.data_start >= 8 && h.data_start <= size);
  const uint64_t data_size = size - h.data_start;
  uint64_t last_end = 0;  // end of the last non-empty tensor seen in begin order
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const auto& t = h.tensors[i];
    check(t.begin <= t.end && t.end <= data_size);
    check(h.data_start + t.end <= size);
    // The reader builds at::empty(shape) and copies nbytes(): they must agree, and numel() must not overflow
    // (it is int64 arithmetic, so UBSan reports it if it does).
    for (int64_t d : t.shape) check(d >= 0);
    const int64_t numel = t.numel();
    check(numel >= 0);
    check(static_cast<uint64_t>(numel) * qtune::io::dtype_size(t.dtype) == t.nbytes());
    if (i > 0) check(h.tensors[i - 1].begin <= t.begin);  // sorted by begin
    if (t.nbytes() > 0) {
      // Non-empty ranges are pairwise disjoint: in begin order each starts at or after every earlier end.
      check(t.begin >= last_end);
      last_end = t.end;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto header = qtune::io::parse_safetensors_header(data, size, "fuzz.safetensors");
    check_invariants(header, size);
  } catch (const qtune::Error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
