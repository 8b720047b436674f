// libFuzzer harness for parse_gguf_header (torch-free; scripts/fuzz.sh builds and runs it). A rejected file must be
// a qtune::Error; anything else (another exception, a crash, an ASan/UBSan report) escapes and is a finding. An
// accepted header must satisfy what GgufFile relies on when it hands out tensor data, so a violation traps.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qtune/io/gguf_header.h"
#include "qtune/util/error.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_invariants(const qtune::io::GgufHeader& h, size_t size) {
  check(h.version == 2 || h.version == 3);
  check(h.alignment > 0 && (h.alignment & (h.alignment - 1)) == 0);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& t : h.tensors) {
    check(!t.dims.empty() && t.dims.size() <= 4);
    for (auto d : t.dims) check(d > 0);
    const auto* info = qtune::quant::ggml_type_info(static_cast<uint32_t>(t.type));
    check(info != nullptr);
    check(t.numel() > 0 && t.numel() % info->block_elems == 0);
    check(t.nbytes == static_cast<uint64_t>(t.numel() / info->block_elems) * static_cast<uint64_t>(info->block_bytes));
    check(t.offset >= h.data_start && t.offset <= size && t.nbytes <= size - t.offset);
    check(t.offset % h.alignment == 0);
    ranges.emplace_back(t.offset, t.offset + t.nbytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) check(ranges[i].first >= ranges[i - 1].second);
  for (const auto& [key, value] : h.metadata.items()) check(h.value_types.count(key) == 1 && !key.empty());
  // Arrays were checked as bytes: decoding them must succeed, with the count the file declared, and every value
  // (strings included) must be writable as JSON.
  for (const auto& [key, array] : h.arrays) {
    check(h.value_types.count(key) == 1 && h.metadata.count(key) == 0 && !key.empty());
    const auto values = array.to_json();
    check(values.size() == array.size);
    (void)values.dump();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto header = qtune::io::parse_gguf_header(data, size, "fuzz.gguf");
    check_invariants(header, size);
  } catch (const qtune::Error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
