#pragma once
// llama.cpp's importance matrix (imatrix): for every linear, the mean over calibration tokens of the squared input,
// per input column — what its K-quant search weighs each column's rounding error by. A LinearFactory that wraps the
// factory a model is built with: each linear it builds records its inputs while recording is on, and keeps the
// wrapped linear's parameter names, so a checkpoint loads into the observed model unchanged.
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qtune/data/tokenizer.h"
#include "qtune/nn/decoder.h"
#include "qtune/nn/linear.h"

namespace qtune::calib {

struct ImportanceMatrix {
  std::map<std::string, at::Tensor> columns;  // weight name ("model.layers.0.mlp.down_proj.weight") → [in] fp32
  int64_t tokens = 0;                         // calibration tokens seen
};

class ImportanceCollector : public nn::LinearFactory {
 public:
  explicit ImportanceCollector(nn::LinearFactory& inner) : inner_(inner) {}
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override;

  // Runs `model` (built with this factory) on each sequence, recording every linear's inputs.
  ImportanceMatrix collect(nn::CausalLMImpl& model, const std::vector<std::vector<int64_t>>& sequences);

  struct Sums {
    at::Tensor sum_sq;  // [in] fp64
    int64_t rows = 0;
    bool recording = false;
  };

 private:
  nn::LinearFactory& inner_;
  std::map<std::string, std::shared_ptr<Sums>> sums_;  // by weight name
};

// Calibration sequences from a text file: the whole text tokenized (with the tokenizer's BOS at the start of each
// sequence when it adds one), cut into `seq_len`-token pieces, at most `max_sequences` of them.
std::vector<std::vector<int64_t>> calibration_sequences(const std::string& text_file, const data::Tokenizer& tok,
                                                        int64_t seq_len, int64_t max_sequences);
// Exactly `count` of them: fewer is an error naming the file and the two settings that ask for them (`count_key`,
// `seq_len_key`: the flags or the recipe keys).
std::vector<std::vector<int64_t>> calibration_sequences_exactly(const std::string& text_file,
                                                                const data::Tokenizer& tok, int64_t seq_len,
                                                                int64_t count, const std::string& count_key,
                                                                const std::string& seq_len_key);

}  // namespace qtune::calib
