#!/usr/bin/env python3
"""Oracle: compressed-tensors (the library llm-compressor saves with, and vLLM reads) on W8A8 checkpoints.

Usage:
  compressed_tensors_w8a8.py OUT_DIR
      (ctest fixture oracle_compressed_tensors) A tiny random Llama in fp32, saved dense (OUT_DIR/dense) and as W8A8
      compressed by compressed-tensors' own API (OUT_DIR/ct_w8a8): the scheme preset "W8A8" applied to every Linear but
      lm_head, each weight's per-channel scale from compressed-tensors' calculate_qparams (what llm-compressor's minmax
      observer hands it), then ModelCompressor.compress_model and update_config, as llm-compressor's save does.
      OUT_DIR/ct_w8a8_reference.safetensors: every quantized linear's decompressed weight (compressed-tensors'
      dequantize) and the probe's logits as transformers computes them on that checkpoint, with its int8 activations
      ("logits") and with activation quantization switched off ("logits_w8a16").
  compressed_tensors_w8a8.py --load MODEL_DIR OUT_FILE
      transformers loads MODEL_DIR (a W8A8 checkpoint qtune wrote) through compressed-tensors on the CPU and writes the
      same three kinds of tensors to OUT_FILE.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config, preset_name_to_scheme
from compressed_tensors.quantization.utils import calculate_qparams
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

VOCAB = 320
# The probe of tests/integration/tiny_run.h (probe_logits): ids 1..39.
PROBE = list(range(1, 40))


def probe_logits(model):
    with torch.no_grad():
        return model(torch.tensor([PROBE])).logits[0].float().contiguous()


def set_activation_quantization(model, enabled):
    for m in model.modules():
        if hasattr(m, "quantization_scheme"):
            m.quantization_enabled = enabled


def quantized_linears(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and hasattr(m, "quantization_scheme")
            and m.quantization_scheme is not None]


def reference_of(model_dir):
    """transformers + compressed-tensors on a W8A8 directory: decompressed weights and the probe's logits."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = {}
    out["logits"] = probe_logits(model)  # the first forward decompresses the weights
    set_activation_quantization(model, False)
    out["logits_w8a16"] = probe_logits(model)
    linears = quantized_linears(model)
    if not linears:
        raise SystemExit(f"{model_dir}: transformers attached no quantization scheme to any linear")
    for name, m in linears:
        if m.weight.dtype != torch.float32:
            raise SystemExit(f"{name}: decompressed to {m.weight.dtype}, expected float32")
        out[name + ".weight"] = m.weight.detach().float().contiguous()
    print(f"{model_dir}: {len(linears)} W8A8 linears; |logits - logits_w8a16| max "
          f"{(out['logits'] - out['logits_w8a16']).abs().max().item():.4g}")
    return out


def build(out_dir):
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=128, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(38)
    model = LlamaForCausalLM(config)
    # Larger-than-default init so that every layer shows in the logits; a few outlier input channels, as real
    # activations have, so that per-token scales matter.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
            else:
                p.uniform_(0.5, 1.5)
        model.model.layers[0].input_layernorm.weight[:3] = 8.0
    model = model.eval()
    model.save_pretrained(os.path.join(out_dir, "dense"))

    scheme = preset_name_to_scheme("W8A8", ["Linear"])
    qconfig = QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"])
    apply_quantization_config(model, qconfig)
    with torch.no_grad():
        for name, m in quantized_linears(model):
            w = m.weight
            scale, zero = calculate_qparams(w.amin(1, keepdim=True), w.amax(1, keepdim=True), m.quantization_scheme.weights)
            m.weight_scale.data.copy_(scale.to(m.weight_scale.dtype).reshape(m.weight_scale.shape))
            if hasattr(m, "weight_zero_point"):
                m.weight_zero_point.data.copy_(zero.to(m.weight_zero_point.dtype).reshape(m.weight_zero_point.shape))
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="int-quantized")
    compressor.compress_model(model)
    ct_dir = os.path.join(out_dir, "ct_w8a8")
    model.save_pretrained(ct_dir)
    compressor.update_config(ct_dir)
    with open(os.path.join(ct_dir, "config.json")) as f:
        q = json.load(f)["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "int-quantized", q
    save_file(reference_of(ct_dir), os.path.join(out_dir, "ct_w8a8_reference.safetensors"))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--load":
        save_file(reference_of(sys.argv[2]), sys.argv[3])
        return
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    build(out_dir)


if __name__ == "__main__":
    main()
