#include "qtune/autograd/checkpoint.h"

#include <ATen/Context.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "qtune/util/rng.h"

namespace qtune::autograd {
namespace {

struct Holder : torch::CustomClassHolder {
  CheckpointedFn fn;
  std::vector<std::pair<at::Generator, at::Tensor>> rng;  // generator, its state before the first run
};

// The generators dropout may draw from on x's device: the CPU one always, the device's own for CUDA.
std::vector<at::Generator> generators_for(const at::Tensor& x) {
  std::vector<at::Generator> out{at::detail::getDefaultCPUGenerator()};
  if (x.is_cuda()) out.push_back(at::globalContext().defaultGenerator(x.device()));
  return out;
}

struct Checkpoint : public torch::autograd::Function<Checkpoint> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                            c10::IValue holder_value) {
    auto holder = holder_value.toCapsule();
    auto& h = *static_cast<Holder*>(holder.get());
    for (auto& g : generators_for(x)) h.rng.emplace_back(g, generator_state(g));
    ctx->save_for_backward({x});
    ctx->saved_data["holder"] = holder_value;
    ctx->saved_data["params"] = static_cast<int64_t>(params.size());
    for (size_t i = 0; i < params.size(); ++i) ctx->saved_data["p" + std::to_string(i)] = params[i];
    torch::NoGradGuard no_grad;  // (Function::forward already runs without grad; explicit for readers)
    return h.fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto& h = *static_cast<Holder*>(ctx->saved_data["holder"].toCapsule().get());
    const auto x_saved = ctx->get_saved_variables()[0];
    const int64_t n = ctx->saved_data["params"].toInt();
    std::vector<at::Tensor> params;
    for (int64_t i = 0; i < n; ++i) params.push_back(ctx->saved_data["p" + std::to_string(i)].toTensor());

    // Re-run with the first run's RNG state, then put back the state the rest of the backward pass has.
    std::vector<at::Tensor> now;
    for (auto& [g, s] : h.rng) now.push_back(generator_state(g)), set_generator_state(g, s);
    at::Tensor x = x_saved.detach().requires_grad_(x_saved.requires_grad());
    at::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = h.fn(x);
    }
    for (size_t i = 0; i < h.rng.size(); ++i) set_generator_state(h.rng[i].first, now[i]);

    std::vector<at::Tensor> inputs;
    std::vector<size_t> slot;  // index in the result list of each input
    if (x.requires_grad()) inputs.push_back(x), slot.push_back(0);
    for (int64_t i = 0; i < n; ++i)
      if (params[i].requires_grad()) inputs.push_back(params[i]), slot.push_back(1 + i);
    torch::autograd::variable_list result(2 + n);  // x, params..., holder
    if (!inputs.empty() && y.requires_grad()) {
      auto grads = torch::autograd::grad({y}, inputs, {grad_outputs[0]}, /*retain_graph=*/false,
                                         /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t i = 0; i < grads.size(); ++i) result[slot[i]] = grads[i];
    }
    return result;
  }
};

}  // namespace

at::Tensor checkpoint(CheckpointedFn fn, const at::Tensor& x, const std::vector<at::Tensor>& params) {
  auto holder = c10::make_intrusive<Holder>();
  holder->fn = std::move(fn);
  return Checkpoint::apply(x, at::TensorList(params), c10::IValue::make_capsule(holder));
}

}  // namespace qtune::autograd
