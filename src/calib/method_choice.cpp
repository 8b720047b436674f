#include "qtune/calib/method_choice.h"

#include <algorithm>
#include <set>
#include <queue>

#include "qtune/util/error.h"

namespace qtune::calib {

const std::vector<std::string> kAllMethods = {"nf4", "int8", "gptq", "awq", "16bit"};

void check_methods(const std::vector<std::string>& methods, const std::string& what) {
  if (methods.empty()) fail("{}: name at least one method (nf4, int8, gptq, awq, 16bit)", what);
  std::set<std::string> seen;
  for (const auto& m : methods) {
    if (std::find(kAllMethods.begin(), kAllMethods.end(), m) == kAllMethods.end())
      fail("{}: unknown method '{}' (expected nf4, int8, gptq, awq or 16bit)", what, m);
    if (!seen.insert(m).second) fail("{}: '{}' is named twice", what, m);
  }
}

std::vector<std::string> parse_methods(const std::string& list, const std::string& what) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const auto end = std::min(list.find(',', start), list.size());
    out.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  for (auto& m : out) m.erase(std::remove(m.begin(), m.end(), ' '), m.end());
  if (list.empty()) out.clear();
  check_methods(out, what);
  return out;
}

namespace {

// Loss removed per extra bit per weight, from option a to b.
double gain(const MethodOption& a, const MethodOption& b) { return (a.loss - b.loss) / (b.bits - a.bits); }

// The indices of `options` on the lower convex hull of (bits, loss), cheapest first: each step removes loss, and
// each removes less per bit than the one before.
std::vector<size_t> hull_of(const std::vector<MethodOption>& options) {
  std::vector<size_t> by_bits(options.size());
  for (size_t i = 0; i < by_bits.size(); ++i) by_bits[i] = i;
  std::stable_sort(by_bits.begin(), by_bits.end(), [&](size_t a, size_t b) {
    return options[a].bits != options[b].bits ? options[a].bits < options[b].bits : options[a].loss < options[b].loss;
  });
  std::vector<size_t> hull;
  for (size_t i : by_bits) {
    const auto& p = options[i];
    if (!hull.empty() && (p.bits <= options[hull.back()].bits || p.loss >= options[hull.back()].loss)) continue;
    while (hull.size() >= 2 &&
           gain(options[hull[hull.size() - 2]], options[hull.back()]) <= gain(options[hull.back()], p))
      hull.pop_back();
    hull.push_back(i);
  }
  return hull;
}

}  // namespace

MethodChoice choose_methods(const std::vector<LinearOptions>& linears, double budget_bits, const std::string& what) {
  MethodChoice c;
  std::vector<std::vector<size_t>> hulls;
  double params = 0, bits = 0;
  for (const auto& l : linears) {
    if (l.options.empty()) fail("{}: no quantization method can store it (none of the methods asked for fits its shape)", l.name);
    hulls.push_back(hull_of(l.options));
    c.chosen.push_back(hulls.back().front());
    params += static_cast<double>(l.parameters);
    bits += l.options[c.chosen.back()].bits * static_cast<double>(l.parameters);
  }
  if (params == 0) fail("{}: no linear to choose a method for", what);
  if (bits / params > budget_bits + 1e-9)
    fail("{} {} is below what the cheapest method of every linear costs ({:.3f} bits per weight)", what, budget_bits,
         bits / params);

  // The next step up each linear's hull, best loss per extra bit first.
  struct Step {
    double per_bit;
    size_t linear, hull_index;
    bool operator<(const Step& o) const { return per_bit < o.per_bit; }
  };
  std::priority_queue<Step> steps;
  auto push_next = [&](size_t li, size_t h) {
    if (h + 1 >= hulls[li].size()) return;
    const auto& o = linears[li].options;
    steps.push({gain(o[hulls[li][h]], o[hulls[li][h + 1]]) / static_cast<double>(linears[li].parameters), li, h + 1});
  };
  for (size_t i = 0; i < linears.size(); ++i) push_next(i, 0);
  const double allowed = budget_bits * params;
  while (!steps.empty()) {
    const auto s = steps.top();
    steps.pop();
    const auto& o = linears[s.linear].options;
    const auto& from = o[hulls[s.linear][s.hull_index - 1]];
    const auto& to = o[hulls[s.linear][s.hull_index]];
    const double extra = (to.bits - from.bits) * static_cast<double>(linears[s.linear].parameters);
    if (bits + extra > allowed + 1e-9 * allowed) continue;  // too dear; a cheaper step elsewhere may still fit
    bits += extra;
    c.chosen[s.linear] = hulls[s.linear][s.hull_index];
    push_next(s.linear, s.hull_index);
  }
  c.average_bits = bits / params;
  for (size_t i = 0; i < linears.size(); ++i) c.loss += linears[i].options[c.chosen[i]].loss;
  return c;
}

}  // namespace qtune::calib
