#pragma once
// --device auto|cpu|cuda and --dtype auto|fp32|bf16|fp16, resolved once at the front end.
#include <ATen/ATen.h>

#include <string>

namespace qtune {

// "auto": cuda when a GPU is usable, else cpu. `where` names the setting in errors: the flag, or a recipe's key
// ("r.yaml: 'device'"), whose fix is another value in the recipe.
at::Device resolve_device(const std::string& spec, const std::string& where = "--device");
// The device `spec` names, whether or not this machine has it ("auto": cuda when a GPU is usable): for planning a
// run on a machine that is not the one it will run on.
at::Device named_device(const std::string& spec);
// "auto": fp32 on CPU; bf16 on a GPU that supports it, else fp16.
at::ScalarType resolve_dtype(const std::string& spec, at::Device device);
std::string dtype_label(at::ScalarType type);
// Whether this CPU computes bf16 natively (AVX512-BF16), so that bf16 training outruns fp32 on it.
bool cpu_has_fast_bf16();

}  // namespace qtune
