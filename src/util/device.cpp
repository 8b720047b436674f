#include "qtune/util/device.h"

#include <torch/cuda.h>

#include "qtune/util/error.h"

namespace qtune {

at::Device resolve_device(const std::string& spec, const std::string& where) {
  const bool flag = where.rfind("--", 0) == 0;
  if (spec == "cpu") return at::kCPU;
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available())
      fail("{} {}: no usable CUDA GPU on this machine ({} cpu or auto)", where, spec,
           flag ? "use " + where : "set it to");
    return at::Device(spec);
  }
  if (spec == "auto") return torch::cuda::is_available() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  fail("{} '{}': expected auto, cpu, cuda or cuda:N", where, spec);
}

at::Device named_device(const std::string& spec) {
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    try {
      return at::Device(spec);
    } catch (const c10::Error&) {
      fail("device '{}': expected auto, cpu, cuda or cuda:N", spec);
    }
  }
  return resolve_device(spec);
}

at::ScalarType resolve_dtype(const std::string& spec, at::Device device) {
  if (spec == "fp32" || spec == "float32") return at::kFloat;
  if (spec == "bf16" || spec == "bfloat16") return at::kBFloat16;
  if (spec == "fp16" || spec == "float16") return at::kHalf;
  if (spec == "auto") return device.is_cuda() ? at::kBFloat16 : at::kFloat;
  fail("--dtype '{}': expected auto, fp32, bf16 or fp16", spec);
}

bool cpu_has_fast_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

std::string dtype_label(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "fp32";
    case at::kBFloat16: return "bf16";
    case at::kHalf: return "fp16";
    default: return c10::toString(type);
  }
}

}  // namespace qtune
