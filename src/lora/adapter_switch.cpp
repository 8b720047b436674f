#include "qtune/lora/adapter_switch.h"

#include "qtune/lora/inject.h"

namespace qtune::lora {

AdaptersDisabled::AdaptersDisabled(torch::nn::Module& model) {
  for (auto& [name, layer] : lora_layers(model)) {
    layers_.emplace_back(layer, layer->adapter_enabled());
    layer->set_adapter_enabled(false);
  }
}

AdaptersDisabled::~AdaptersDisabled() {
  for (auto& [layer, was_on] : layers_) layer->set_adapter_enabled(was_on);
}

}  // namespace qtune::lora
