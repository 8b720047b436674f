#pragma once
// Memory figures for progress lines, benchmarks and `qtune plan` checks.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace qtune {

// CUDA: peak bytes allocated by the caching allocator on that device; CPU: the process's peak RSS (VmHWM).
int64_t peak_memory_bytes(at::Device device);
// Starts the peak over again from what is held now (Linux: /proc/self/clear_refs 5 resets VmHWM; CUDA: the
// allocator's peak stats), so that a later peak_memory_bytes is one phase's, not the load's.
void reset_peak_memory(at::Device device);
int64_t current_rss_bytes();
// Hands the heap's free pages back to the system (glibc's malloc_trim). Loading leaves hundreds of MiB of freed
// temporaries (dequantized weights, their quantization scratch) in the heap, resident until trimmed: 360 MiB of
// Gemma 3 270M's 1.1 GiB after its load. A no-op for other allocators.
void release_free_heap();
// "1.23 GiB", "512 MiB"
std::string format_bytes(double bytes);

}  // namespace qtune
