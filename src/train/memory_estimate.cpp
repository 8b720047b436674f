#include "qtune/train/memory_estimate.h"

#include <fmt/format.h>

#include <algorithm>

#include "qtune/io/gguf.h"
#include "qtune/io/gguf_model.h"
#include "qtune/io/model_family.h"
#include "qtune/optim/optimizer.h"
#include "qtune/util/error.h"

namespace qtune::train {
namespace {

struct Projection {
  std::string name;
  int64_t in, out;
};

std::vector<Projection> projections(const io::ModelConfig& c, int64_t layer) {
  const auto p = fmt::format("model.layers.{}.", layer);
  std::vector<Projection> out;
  for (const auto& l : io::layer_linears(c)) out.push_back({p + l.name, l.in_features, l.out_features});
  return out;
}

// Bytes of one stored projection in bitsandbytes' layout.
int64_t stored_bytes(const quant::LayerQuant& q, int64_t n, int64_t out, int64_t dense_bytes) {
  switch (q.format) {
    case quant::WeightFormat::NF4:
    case quant::WeightFormat::FP4: {
      const int64_t blocks = (n + q.blocksize - 1) / q.blocksize;
      const int64_t absmax = q.double_quant ? blocks + ((blocks + 255) / 256) * 4 + 256 * 4 + 4 : blocks * 4;
      return (n + 1) / 2 + absmax + 16 * 4;
    }
    case quant::WeightFormat::Int8:
    case quant::WeightFormat::W8A8: return n + out * 4;  // int8 codes and an fp32 scale per row
    case quant::WeightFormat::Dense: return n * dense_bytes;
    case quant::WeightFormat::Keep: break;  // the file says (kept_bytes)
  }
  return n * dense_bytes;
}

// Bytes of a projection kept as the GGUF stores it: its blocks, or the compute dtype for a float tensor (which loads
// dense). Read from the file's header, not its data.
int64_t kept_bytes(const io::GgufFile& file, const io::GgufLayout& layout, const std::string& projection, int64_t n,
                   int64_t dense_bytes) {
  const auto& t = file.tensor_info(layout.gguf_name(projection + ".weight"));
  if (t.type == quant::GgmlType::F32 || t.type == quant::GgmlType::F16 || t.type == quant::GgmlType::BF16)
    return n * dense_bytes;
  return static_cast<int64_t>(t.nbytes);
}

}  // namespace

std::vector<std::pair<std::string, int64_t>> MemoryEstimate::rows() const {
  std::vector<std::pair<std::string, int64_t>> out;
  if (runtime > 0) out.emplace_back("runtime (LibTorch)", runtime);
  for (auto& row : std::vector<std::pair<std::string, int64_t>>{{"base weights", base_weights}, {"trainable (fp32)", trainable}, {"gradients", gradients},
          {"optimizer state", optimizer_state}, {"activations", activations}, {"logits (chunked)", logits},
          {"dequant workspace", workspace}})
    out.push_back(std::move(row));
  return out;
}

MemoryEstimate estimate_memory(const io::ModelConfig& c, const Recipe& r, const quant::QuantPlan& plan,
                               at::ScalarType dtype, bool cuda) {
  MemoryEstimate m;
  const int64_t s = at::elementSize(dtype);
  const bool full = r.train.mode == "full";
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, L = c.num_hidden_layers;
  const int64_t Hq = c.num_attention_heads * c.head_dim, Hkv = c.num_key_value_heads * c.head_dim;
  std::vector<int64_t> numels;
  int64_t largest = 0, lora_in_fp32 = 0, lora_rank_sum = 0;  // per token, per layer (targeted projections)
  std::shared_ptr<io::GgufFile> gguf;                         // opened for the first kept projection
  for (int64_t l = 0; l < L; ++l) {
    for (const auto& p : projections(c, l)) {
      const int64_t n = p.in * p.out;
      largest = std::max(largest, n);
      if (full) {
        m.base_weights += n * 4;
        numels.push_back(n);
        continue;
      }
      const auto q = plan.resolve(p.name);
      if (q.format == quant::WeightFormat::Keep) {
        if (!gguf) {
          if (!io::is_gguf_path(r.model.path))
            fail("{}: quant.format keep needs a GGUF base, but model.path '{}' is not a .gguf file", r.source,
                 r.model.path);
          gguf = io::GgufFile::open(r.model.path);
        }
        m.base_weights += kept_bytes(*gguf, io::gguf_layout(c), p.name, n, s);
      } else {
        m.base_weights += stored_bytes(q, n, p.out, s);
      }
      if (auto t = r.lora.config.resolve(p.name)) {
        numels.push_back(t->r * p.in), numels.push_back(p.out * t->r);
        if (l == 0) lora_in_fp32 += p.in * 4 * (r.lora.config.dropout > 0 ? 2 : 1) + (r.lora.config.dropout > 0 ? p.in : 0),
                    lora_rank_sum += t->r * 4;
      }
    }
  }
  const int64_t embed = V * H, head = c.tie_word_embeddings ? 0 : V * H;
  const int64_t norms = ((c.sandwich_norms ? 4 : 2) * H + (c.qk_norm ? 2 * c.head_dim : 0)) * L + H;
  m.base_weights += (embed + head + norms) * (full ? 4 : s);
  if (full) numels.push_back(embed), numels.push_back(head), numels.push_back(norms);
  for (const auto& name : r.lora.config.modules_to_save) numels.push_back(name == "lm_head" ? V * H : embed);
  for (auto n : numels) m.trainable_params += n;
  if (full) m.base_weights = 0;  // counted as trainable below
  m.trainable = m.trainable_params * 4;
  m.gradients = m.trainable_params * 4;
  m.optimizer_state = optim::estimate_state_bytes(r.optim.name, numels);
  // The paged optimizers keep their state in managed memory that the driver may move to the host.

  // Tokens of the largest micro-batch; a preference pair fills two rows (chosen and rejected in one forward; the
  // reference's forward under no-grad stores nothing), a KTO record one (its KL pair runs under no-grad too).
  const bool one_row = r.train.objective == "sft" || r.train.objective == "kto";
  const int64_t batch_rows = r.train.batch_size * (one_row ? 1 : 2);
  const int64_t N = batch_rows * r.data.max_seq_len;
  const int64_t T = r.data.max_seq_len;
  // Saved for backward per token and layer: the two norms' inputs and outputs, q/k/v after RoPE and the attention
  // output (fused SDPA keeps those and a log-sum-exp; the CPU math path keeps the [heads, T, T] probabilities
  // instead), the SwiGLU's gate, up, silu(gate) and product, and the fp32 inputs (and dropout masks) of the adapters.
  int64_t per_token = s * (4 * H + 2 * Hq + 2 * Hkv + 4 * I) + 4 * 2 + (full ? 0 : lora_in_fp32 + lora_rank_sum);
  if (full) per_token += s * (3 * H + Hq + I);  // the dense linears' inputs are saved for their weight gradients
  int64_t attention = cuda ? N / T * c.num_attention_heads * T * 4 : N / T * c.num_attention_heads * T * T * (s + 1);
  m.layer_activations = N * per_token + attention;
  m.layer_input = N * H * s;
  m.layers = L;
  m.activations_no_checkpointing = activations_with(m, 0);
  m.activations_checkpointing = activations_with(m, L);
  m.activations = r.train.gradient_checkpointing ? m.activations_checkpointing : m.activations_no_checkpointing;
  const int64_t rows = std::max<int64_t>(1, (int64_t{64} << 20) / (4 * V));
  m.logits = std::min(rows, N) * V * 4 * 2 + N * H * (s + 4);
  m.workspace = full ? 0 : largest * s * 2;
  return m;
}

int64_t activations_with(const MemoryEstimate& m, int64_t checkpointed) {
  const int64_t n = std::clamp<int64_t>(checkpointed, 0, m.layers);
  // A recomputed layer keeps its input, and one of them is live again while it recomputes; the others keep all
  // their activations; the final norm's input on top.
  return n * m.layer_input + (m.layers - n) * m.layer_activations + (n > 0 ? m.layer_activations : 0) + m.layer_input;
}

int64_t total_with(const MemoryEstimate& m, int64_t checkpointed) {
  return m.total() - m.activations + activations_with(m, checkpointed);
}

int64_t checkpointed_layers_for_budget(const MemoryEstimate& m, int64_t budget_bytes) {
  for (int64_t n = 0; n <= m.layers; ++n)
    if (total_with(m, n) <= budget_bytes) return n;
  return m.layers;
}

int64_t checkpointed_layers(const MemoryEstimate& m, const Recipe& r) {
  if (!r.train.gradient_checkpointing) return 0;
  if (r.train.memory_budget_gib <= 0) return m.layers;
  return checkpointed_layers_for_budget(m, static_cast<int64_t>(r.train.memory_budget_gib * double(int64_t{1} << 30)));
}

}  // namespace qtune::train
