#include "qtune/optim/optimizer.h"

#include <cmath>
#include <map>
#include <regex>
#include <set>

#include "qtune/optim/adamw.h"
#include "qtune/optim/adamw8bit.h"
#include "qtune/util/error.h"

namespace qtune::optim {
namespace {

std::string valid_names() {
  std::string out;
  for (const auto& n : optimizer_names()) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::string describe(at::ScalarType dtype, at::IntArrayRef sizes) {
  return fmt::format("{} [{}]", c10::toString(dtype), fmt::join(sizes, ", "));
}
std::string describe(const at::Tensor& t) { return t.defined() ? describe(t.scalar_type(), t.sizes()) : "undefined"; }

at::Tensor int64_scalar(int64_t v) { return at::scalar_tensor(v, at::kLong); }

}  // namespace

void validate(const AdamWOptions& o) {
  if (!std::isfinite(o.lr) || o.lr < 0) fail("optimizer lr must be a finite number >= 0, got {}", o.lr);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) fail("optimizer beta1 must be in [0, 1), got {}", o.beta1);
  if (!(o.beta2 >= 0 && o.beta2 < 1)) fail("optimizer beta2 must be in [0, 1), got {}", o.beta2);
  if (!std::isfinite(o.eps) || o.eps < 0) fail("optimizer eps must be a finite number >= 0, got {}", o.eps);
  if (!std::isfinite(o.weight_decay) || o.weight_decay < 0)
    fail("optimizer weight_decay must be a finite number >= 0, got {}", o.weight_decay);
}

Optimizer::Optimizer(NamedParams params, AdamWOptions options)
    : params_(std::move(params)), options_(options), param_steps_(params_.size(), 0) {
  validate(options_);
  std::set<std::string> seen;
  for (const auto& [name, p] : params_) {
    if (name.empty()) fail("optimizer: a parameter has an empty name");
    if (!seen.insert(name).second) fail("optimizer: parameter '{}' is listed twice", name);
    if (!p.defined()) fail("optimizer: parameter '{}' is an undefined tensor", name);
    if (p.scalar_type() != at::kFloat)
      fail("optimizer: parameter '{}' is {}; only fp32 parameters can be trained (keep the adapters in fp32)", name,
           c10::toString(p.scalar_type()));
  }
}

Optimizer::~Optimizer() = default;

bool applies_weight_decay(const std::string& name) {
  static const std::regex forbidden(R"(bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.))", std::regex::icase);
  return !std::regex_search(name, forbidden);
}

AdamWOptions Optimizer::options_for(size_t index) const {
  auto o = options_;
  if (!applies_weight_decay(params_[index].first)) o.weight_decay = 0;
  return o;
}

void Optimizer::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad().reset();
}

void Optimizer::check_lr(double lr) {
  if (!std::isfinite(lr) || lr < 0) fail("optimizer step: learning rate must be a finite number >= 0, got {}", lr);
}

at::Tensor Optimizer::grad_of(size_t index) const {
  const auto& [name, p] = params_[index];
  const auto& grad = p.grad();
  if (!grad.defined()) return grad;
  if (grad.sizes() != p.sizes() || grad.scalar_type() != at::kFloat || grad.device() != p.device())
    fail("optimizer step: the grad of '{}' is {} on {}, expected {} on {}", name, describe(grad), grad.device().str(),
         describe(at::kFloat, p.sizes()), p.device().str());
  return grad;
}

io::NamedTensors Optimizer::state_dict() const {
  io::NamedTensors out;
  out.emplace_back("step", int64_scalar(step_count_));
  for (size_t i = 0; i < params_.size(); ++i) out.emplace_back(params_[i].first + ".step", int64_scalar(param_steps_[i]));
  for (auto& [name, t] : state_tensors()) out.emplace_back(name, t.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
  return out;
}

void Optimizer::load_state_dict(const io::NamedTensors& state) {
  std::map<std::string, const at::Tensor*> given;
  for (const auto& [name, t] : state)
    if (!given.emplace(name, &t).second) fail("optimizer state: '{}' appears twice", name);

  // What state_dict() writes, without copying the state: checked in full before anything changes, so a bad
  // file leaves the optimizer as it was.
  struct Entry {
    std::string name;
    at::ScalarType dtype;
    std::vector<int64_t> sizes;
  };
  std::vector<Entry> expected{{"step", at::kLong, {}}};
  for (const auto& [name, p] : params_) expected.push_back({name + ".step", at::kLong, {}});
  const auto tensors = state_tensors();
  for (const auto& [name, t] : tensors) expected.push_back({name, t.scalar_type(), t.sizes().vec()});

  std::set<std::string> expected_names;
  for (const auto& e : expected) {
    expected_names.insert(e.name);
    auto it = given.find(e.name);
    if (it == given.end()) fail("optimizer state ({}): '{}' is missing", kind(), e.name);
    const at::Tensor& got = *it->second;
    if (!got.defined() || got.scalar_type() != e.dtype || got.sizes() != at::IntArrayRef(e.sizes))
      fail("optimizer state ({}): '{}' is {}, expected {}", kind(), e.name, describe(got), describe(e.dtype, e.sizes));
    if (e.dtype == at::kLong && got.item<int64_t>() < 0)
      fail("optimizer state ({}): '{}' is {}, expected a step count >= 0", kind(), e.name, got.item<int64_t>());
  }
  for (const auto& [name, t] : state)
    if (!expected_names.count(name))
      fail("optimizer state ({}): unexpected entry '{}' (this optimizer has no such state)", kind(), name);

  step_count_ = given.at("step")->item<int64_t>();
  for (size_t i = 0; i < params_.size(); ++i) param_steps_[i] = given.at(params_[i].first + ".step")->item<int64_t>();
  for (const auto& [name, t] : tensors) {
    at::Tensor target = t;  // shares storage with the optimizer's tensor: copied in place, paged state stays managed
    target.copy_(*given.at(name));
  }
}

int64_t Optimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const auto& [name, t] : state_tensors()) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, NamedParams params, AdamWOptions options) {
  if (name == "adamw") return std::make_unique<AdamW>(std::move(params), options, /*paged=*/false);
  if (name == "paged_adamw") return std::make_unique<AdamW>(std::move(params), options, /*paged=*/true);
  if (name == "adamw_8bit") return std::make_unique<AdamW8bit>(std::move(params), options, /*paged=*/false);
  if (name == "paged_adamw_8bit") return std::make_unique<AdamW8bit>(std::move(params), options, /*paged=*/true);
  fail("unknown optimizer '{}': expected one of {}", name, valid_names());
}

int64_t estimate_state_bytes(const std::string& name, const std::vector<int64_t>& param_numels) {
  const bool eight_bit = name == "adamw_8bit" || name == "paged_adamw_8bit";
  if (!eight_bit && name != "adamw" && name != "paged_adamw")
    fail("unknown optimizer '{}': expected one of {}", name, valid_names());
  int64_t bytes = 0;
  for (int64_t n : param_numels) {
    if (n < 0) fail("estimate_state_bytes: negative element count {}", n);
    bytes += eight_bit ? adamw8bit_state_bytes(n) : 2 * n * int64_t{sizeof(float)};
  }
  return bytes;
}

}  // namespace qtune::optim
