#pragma once
// Options shared by the commands that load a model: --device and --dtype.
#include <CLI/CLI.hpp>

#include <string>

#include "qtune/data/tokenizer.h"
#include "qtune/nn/decoder.h"

namespace qtune::cli {

struct ModelOptions {
  std::string dir;
  std::string device = "auto";
  std::string dtype = "auto";
  std::string quant = "none";  // quantize the projections while loading: none | nf4 | fp4 | int8 | w8a8 | keep (a .gguf)
  std::string plan_file;       // or by a YAML plan
  std::string adapter;         // a PEFT adapter directory applied on top (qtune train's run/adapter)

  void add_to(CLI::App& cmd);
  // Loads the model and its tokenizer; prints a one-line summary to stderr.
  std::pair<nn::CausalLM, data::Tokenizer> load() const;
};

}  // namespace qtune::cli
