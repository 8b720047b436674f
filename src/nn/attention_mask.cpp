#include "qtune/nn/attention_mask.h"

namespace qtune::nn {

AttentionMask make_attention_mask(const at::Tensor& query_pos, const at::Tensor& key_pos,
                                  std::optional<int64_t> sliding_window, const at::Tensor& segments) {
  AttentionMask mask;
  const int64_t tq = query_pos.size(1), tk = key_pos.size(1);
  const bool window_matters = sliding_window && *sliding_window < tk;
  if (!window_matters && !segments.defined()) {
    if (tq == tk && tq > 1) {
      mask.is_causal = true;
      return mask;
    }
    if (tq == 1) return mask;  // one new token sees the whole cache
  }
  auto q = query_pos.unsqueeze(-1);  // [B, Tq, 1]
  auto k = key_pos.unsqueeze(1);     // [B, 1, Tk]
  auto allowed = k <= q;
  if (window_matters) allowed = allowed & ((q - k) < *sliding_window);
  if (segments.defined()) {
    auto q_seg = segments.narrow(1, tk - tq, tq).unsqueeze(-1);
    allowed = allowed & (q_seg == segments.unsqueeze(1));
  }
  mask.allowed = allowed.unsqueeze(1);
  return mask;
}

}  // namespace qtune::nn
