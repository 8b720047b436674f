#pragma once
// Precompiled header: LibTorch's headers are most of every translation unit's compile time.
#include <ATen/ATen.h>
#include <torch/types.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
