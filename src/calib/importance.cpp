#include "qtune/calib/importance.h"

#include <torch/csrc/autograd/grad_mode.h>

#include "qtune/data/text_file.h"
#include "qtune/util/error.h"

namespace qtune::calib {
namespace {

// Delegates everything to the wrapped linear; forward first adds Σx² per column while recording. The wrapped linear's
// children and parameters are registered under this module's own names, so parameter paths stay
// "<module>.lora_A.weight" and not "<module>.inner.lora_A.weight".
class ObservedLinearImpl : public nn::LinearImpl {
 public:
  ObservedLinearImpl(nn::Linear inner, std::shared_ptr<ImportanceCollector::Sums> sums)
      : nn::LinearImpl(inner->spec()), inner_(std::move(inner)), sums_(std::move(sums)) {
    for (const auto& c : inner_->named_children()) register_module(c.key(), c.value());
    for (const auto& p : inner_->named_parameters(/*recurse=*/false))
      register_parameter(p.key(), p.value(), p.value().requires_grad());
    for (const auto& b : inner_->named_buffers(/*recurse=*/false)) register_buffer(b.key(), b.value());
  }
  at::Tensor forward(const at::Tensor& x) override {
    if (sums_->recording) {
      const auto flat = x.detach().reshape({-1, x.size(-1)}).to(at::kDouble);
      sums_->sum_sq.add_(flat.square().sum(0).cpu());
      sums_->rows += flat.size(0);
    }
    return inner_->forward(x);
  }
  at::Tensor dense_weight() const override { return inner_->dense_weight(); }
  at::Tensor bias() const override { return inner_->bias(); }
  at::Device device() const override { return inner_->device(); }

 private:
  nn::Linear inner_;
  std::shared_ptr<ImportanceCollector::Sums> sums_;
};

}  // namespace

nn::Linear ImportanceCollector::make(const nn::LinearSpec& spec, const io::WeightSource& weights) {
  auto sums = std::make_shared<Sums>();
  sums->sum_sq = at::zeros({spec.in_features}, at::kDouble);
  sums_[spec.name + ".weight"] = sums;
  return std::make_shared<ObservedLinearImpl>(inner_.make(spec, weights), sums);
}

ImportanceMatrix ImportanceCollector::collect(nn::CausalLMImpl& model, const std::vector<std::vector<int64_t>>& sequences) {
  if (sums_.empty()) fail("importance matrix: the model was not built with this collector");
  if (sequences.empty()) fail("importance matrix: no calibration sequences");
  torch::NoGradGuard no_grad;
  model.eval();
  for (auto& [name, s] : sums_) s->recording = true;
  ImportanceMatrix m;
  const auto device = model.parameters().empty() ? at::Device(at::kCPU) : model.parameters().front().device();
  for (const auto& seq : sequences) {
    model.forward(at::tensor(seq, at::kLong).view({1, -1}).to(device));
    m.tokens += static_cast<int64_t>(seq.size());
  }
  for (auto& [name, s] : sums_) {
    s->recording = false;
    if (s->rows > 0) m.columns[name] = (s->sum_sq / static_cast<double>(s->rows)).to(at::kFloat);
  }
  return m;
}

std::vector<std::vector<int64_t>> calibration_sequences(const std::string& text_file, const data::Tokenizer& tok,
                                                        int64_t seq_len, int64_t max_sequences) {
  if (seq_len < 2) fail("--calib-seq-len must be at least 2, got {}", seq_len);
  const auto text = data::read_text_file(text_file, "calibration text");
  const auto ids = tok.encode(text, false);
  const bool bos = tok.adds_bos();
  const int64_t body = bos ? seq_len - 1 : seq_len;
  std::vector<std::vector<int64_t>> out;
  for (size_t start = 0; start + static_cast<size_t>(body) <= ids.size(); start += static_cast<size_t>(body)) {
    if (max_sequences > 0 && static_cast<int64_t>(out.size()) >= max_sequences) break;
    std::vector<int64_t> seq;
    if (bos) seq.push_back(tok.bos_id());
    seq.insert(seq.end(), ids.begin() + static_cast<ptrdiff_t>(start), ids.begin() + static_cast<ptrdiff_t>(start + body));
    out.push_back(std::move(seq));
  }
  if (out.empty())
    fail("{}: {} tokens are fewer than one calibration sequence of {} (lower --calib-seq-len)", text_file, ids.size(),
         seq_len);
  return out;
}

std::vector<std::vector<int64_t>> calibration_sequences_exactly(const std::string& text_file,
                                                                const data::Tokenizer& tok, int64_t seq_len,
                                                                int64_t count, const std::string& count_key,
                                                                const std::string& seq_len_key) {
  if (count < 1) fail("{} must be at least 1, got {}", count_key, count);
  auto seqs = calibration_sequences(text_file, tok, seq_len, count);
  if (static_cast<int64_t>(seqs.size()) < count)
    fail("{}: holds {} calibration sequences of {} tokens, {} asks for {} (give more text, or lower {} / {})",
         text_file, seqs.size(), seq_len, count_key, count, count_key, seq_len_key);
  return seqs;
}

}  // namespace qtune::calib
