#include "qtune/util/memory.h"

#include <fmt/format.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <fstream>
#include <string>

#if QTUNE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace qtune {
namespace {

int64_t status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) return std::stoll(line.substr(prefix.size()));
  return 0;
}

}  // namespace

int64_t peak_memory_bytes(at::Device device) {
#if QTUNE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif
  (void)device;
  return status_kib("VmHWM") * 1024;
}

void reset_peak_memory(at::Device device) {
#if QTUNE_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
    return;
  }
#endif
  (void)device;
  std::ofstream("/proc/self/clear_refs") << "5";  // no /proc: the peak stays the process's
}

int64_t current_rss_bytes() { return status_kib("VmRSS") * 1024; }

void release_free_heap() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

std::string format_bytes(double bytes) {
  if (bytes >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", bytes / (1024.0 * 1024 * 1024));
  if (bytes >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", bytes / (1024.0 * 1024));
  return fmt::format("{:.0f} KiB", bytes / 1024.0);
}

}  // namespace qtune
