#pragma once
// transformers + gptqmodel loading a GPTQ checkpoint qtune wrote (tests/oracle/gptqmodel_gptq.py --load): the probe's
// logits and every GPTQ linear's dequantized weight, beside qtune's logits on the same probe.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "qtune/nn/decoder.h"

namespace qtune::test {

// The oracle's PROBE.
inline at::Tensor gptqmodel_probe_logits(nn::CausalLMImpl& m) {
  torch::NoGradGuard no_grad;
  m.eval();
  const std::vector<int64_t> probe{1, 5, 9, 77, 200, 13, 42, 3, 250, 128, 64, 7, 99, 31, 180, 2};
  return m.forward(at::tensor(probe, at::kLong).view({1, -1}));
}

// Runs the oracle's --load mode on `qdir`; the file it writes ("" when it failed, with the log's tail as a failure).
inline std::string transformers_load_gptq(const std::string& qdir, const std::string& dir) {
  const auto out = dir + "/transformers_logits.safetensors";
  const auto cmd = std::string("OMP_NUM_THREADS=1 ") + QTUNE_TEST_PYTHON + " " + QTUNE_TEST_SOURCE_DIR +
                   "/tests/oracle/gptqmodel_gptq.py --load '" + qdir + "' '" + out + "' > '" + dir + "/log.txt' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream in(dir + "/log.txt");
    std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ADD_FAILURE() << "the oracle failed to load " << qdir << ":\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
    return "";
  }
  return out;
}

}  // namespace qtune::test
