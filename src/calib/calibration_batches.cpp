#include "qtune/calib/calibration_batches.h"

#include "qtune/nn/decoder.h"
#include "qtune/nn/embedding.h"
#include "qtune/util/error.h"

namespace qtune::calib {

CalibrationWeights load_calibration_weights(const nn::LinearSpec& spec, const io::WeightSource& weights) {
  const auto fp32 = at::TensorOptions().dtype(at::kFloat);
  CalibrationWeights w;
  if (spec.bias) w.bias = nn::load_frozen(weights, spec.name + ".bias", {spec.out_features}, fp32).clone();
  w.weight = nn::load_frozen(weights, spec.name + ".weight", {spec.out_features, spec.in_features}, fp32).clone();
  weights.release(spec.name + ".weight");
  return w;
}

std::vector<CalibrationBatch> embed_calibration(const io::ModelConfig& config, const io::WeightSource& weights,
                                                const std::vector<std::vector<int64_t>>& seqs, int64_t batch) {
  const auto table = nn::load_frozen(weights, "model.embed_tokens.weight", {config.vocab_size, config.hidden_size},
                                     at::TensorOptions().dtype(at::kFloat));
  const nn::PositionEncoding positions(config);
  std::vector<CalibrationBatch> out;
  for (size_t i = 0; i < seqs.size();) {
    size_t j = i;
    while (j < seqs.size() && j - i < static_cast<size_t>(batch) && seqs[j].size() == seqs[i].size()) ++j;
    const auto t = static_cast<int64_t>(seqs[i].size());
    std::vector<int64_t> flat;
    for (size_t k = i; k < j; ++k) {
      for (auto id : seqs[k])
        if (id < 0 || id >= config.vocab_size)
          fail("calibration token id {} is outside the vocabulary of {}", id, config.vocab_size);
      flat.insert(flat.end(), seqs[k].begin(), seqs[k].end());
    }
    const auto ids = at::tensor(flat, at::kLong).view({static_cast<int64_t>(j - i), t});
    CalibrationBatch b;
    b.hidden = nn::scale_embeddings(at::embedding(table, ids), config);
    const auto pos = at::arange(t, at::kLong).expand({ids.size(0), t});
    b.inputs = positions.inputs(pos, pos, at::Tensor(), at::kFloat);
    out.push_back(std::move(b));
    i = j;
  }
  return out;
}

}  // namespace qtune::calib
