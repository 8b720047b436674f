#!/usr/bin/env python3
"""Oracle: gptqmodel (ModelCloud/GPTQModel 7.6.0, the maintained successor of AutoGPTQ) is the truth for GPTQ.

Default mode (the oracle_gptqmodel fixture), OUT_DIR:
  layers.safetensors + layers.json  for several settings, one linear's weight W and Hessian H (correlated, uneven
                                    inputs) and what gptqmodel's GPTQ.quantize returns for them: Q, scale, zero, g_idx.
  tiny/                             a tiny random Llama (fp32) saved by transformers, calibration.json (token ids)
  gptqmodel-<case>/                 gptqmodel's GPTQ checkpoint of tiny/ on those ids, and logits.safetensors: what
                                    transformers (+ gptqmodel's exact torch kernel) computes with it on a probe.
--load QDIR OUT.safetensors: transformers + gptqmodel load QDIR (qtune's checkpoint) and write the probe's logits and
                            every GPTQ linear's dequantize_weight().

gptqmodel's defaults differ from the GPTQ paper's algorithm in ways that are switched off here, as the reference
implementation runs: act_group_aware (a reordering of its own), damp 0.05 with auto increment, and mse search.
"""
import json
import os
import sys

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # with 1 (its default on 2 cores) its loader pool refuses to start

import torch
from safetensors.torch import save_file

PROBE = [[1, 5, 9, 77, 200, 13, 42, 3, 250, 128, 64, 7, 99, 31, 180, 2]]


# A mixed plan: one linear on the 8-bit grid, one left unquantized (gptqmodel's per-module "dynamic" overrides).
MIXED = {r"+:model\.layers\.0\.mlp\.down_proj": {"bits": 8, "group_size": 32, "sym": True},
         r"-:model\.layers\.1\.self_attn\.q_proj": {}}


def qcfg(bits, group, sym, desc_act, static_groups=False, fmt="gptq", dynamic=None):
    from gptqmodel import QuantizeConfig
    return QuantizeConfig(bits=bits, group_size=group, sym=sym, desc_act=desc_act, act_group_aware=False,
                          static_groups=static_groups, damp_percent=0.01, damp_auto_increment=0.0015, mse=0.0,
                          fallback=None, format=fmt, dynamic=dynamic)


def layer_cases(out):
    from gptqmodel.quantization.gptq import GPTQ
    g = torch.Generator().manual_seed(7)
    fin, fout, ntok = 256, 48, 2048
    w = torch.randn(fout, fin, generator=g) * 0.05
    mix = torch.randn(fin, fin, generator=g) * 0.3 + torch.eye(fin)
    x = (torch.randn(ntok, fin, generator=g) @ mix) * (torch.rand(fin, generator=g) * 3 + 0.1)
    h = (2.0 / ntok) * (x.T @ x)
    tensors, cases = {"W": w.contiguous(), "H": h.contiguous()}, []
    for bits, group, sym, desc_act, static in [(4, 128, True, False, False), (4, 32, False, False, False),
                                               (4, 32, True, True, False), (4, 64, False, True, True),
                                               (4, -1, True, False, False), (8, 128, False, False, False),
                                               (2, 32, False, True, False), (4, 32, True, False, True)]:
        name = f"b{bits}_g{group}_{'sym' if sym else 'asym'}{'_act' if desc_act else ''}{'_static' if static else ''}"
        lin = torch.nn.Linear(fin, fout, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        q = GPTQ(lin, qcfg(bits, group, sym, desc_act, static))
        q.quantizer.configure(perchannel=True)
        q.H, q.nsamples, q._hessian_dirty = h.clone(), ntok, False
        Q, scale, zero, g_idx, _dur, _loss, damp, _n = q.quantize(blocksize=128)
        tensors[name + ".Q"] = Q.float().contiguous()
        tensors[name + ".scale"] = scale.float().t().contiguous()  # [groups, out], qtune's orientation
        tensors[name + ".zero"] = zero.float().t().contiguous()
        tensors[name + ".g_idx"] = g_idx.to(torch.int32).contiguous()
        cases.append(dict(name=name, bits=bits, group_size=group, sym=sym, act_order=desc_act, static_groups=static,
                          damp=float(damp)))
    save_file(tensors, os.path.join(out, "layers.safetensors"))
    with open(os.path.join(out, "layers.json"), "w") as f:
        json.dump(cases, f, indent=1)


def tiny_model(out):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=256, max_position_embeddings=128, bos_token_id=1,
                      eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    path = os.path.join(out, "tiny")
    model.save_pretrained(path)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(256)}, unk_token="t3"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="t0", bos_token="t1", eos_token="t2",
                            unk_token="t3").save_pretrained(path)
    g = torch.Generator().manual_seed(123)
    calib = [torch.randint(4, 256, (32,), generator=g).tolist() for _ in range(16)]
    with open(os.path.join(out, "calibration.json"), "w") as f:
        json.dump(calib, f)
    with torch.no_grad():
        save_file({"logits": model(torch.tensor(PROBE)).logits.float().contiguous()}, os.path.join(out, "tiny_logits.safetensors"))
    return path, calib


def load_logits(qdir):
    from transformers import AutoModelForCausalLM, GPTQConfig
    with open(os.path.join(qdir, "config.json")) as f:
        q = json.load(f)["quantization_config"]
    bits = q["bits"]
    if q.get("dynamic"):
        return gptqmodel_load_logits(qdir)
    # gptq_torch: dequantize then matmul, exact (the CPU default packs into torch's int4 matmul, approximately).
    # fp32 as asked (transformers' GPTQ loader picks fp16 when no dtype is given).
    model = AutoModelForCausalLM.from_pretrained(qdir, device_map="cpu", dtype=torch.float32,
                                                 quantization_config=GPTQConfig(bits=bits, backend="gptq_torch")).eval()
    assert model.dtype == torch.float32, model.dtype
    out = {}
    with torch.no_grad():
        out["logits"] = model(torch.tensor(PROBE)).logits.float().contiguous()
        for name, module in model.named_modules():
            if hasattr(module, "dequantize_weight"):  # [in, out] in the scales' dtype (fp16)
                out[name + ".dequantized"] = module.dequantize_weight().t().contiguous()
    return out


def gptqmodel_load_logits(qdir):
    # transformers reads GPTQ configs through optimum, which ignores per-module "dynamic" overrides; gptqmodel's own
    # loader (and vLLM) applies them, so a mixed checkpoint is loaded by gptqmodel.
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    TorchLinear.SUPPORTS_DTYPES = [torch.float16, torch.bfloat16, torch.float32]  # as transformers' loader runs it
    model = GPTQModel.load(qdir, device="cpu", dtype=torch.float32, backend=BACKEND.GPTQ_TORCH)
    out = {}
    with torch.no_grad():
        out["logits"] = model.model(torch.tensor(PROBE)).logits.float().contiguous()
        for name, module in model.model.named_modules():
            if hasattr(module, "dequantize_weight"):  # fp32 here: rounded once to fp16, as the other path returns it
                out[name + ".dequantized"] = module.dequantize_weight().half().t().contiguous()
    return out


def quantized_models(out, src, calib):
    from gptqmodel import GPTQModel
    for name, bits, group, sym, desc_act, fmt, dynamic in [("g32_sym", 4, 32, True, False, "gptq", None),
                                                           ("g32_asym_act", 4, 32, False, True, "gptq", None),
                                                           ("g16_asym_v2", 4, 16, False, False, "gptq_v2", None),
                                                           ("g32_sym_mixed", 4, 32, True, False, "gptq", MIXED),
                                                           # asymmetric and mixed: loaded through gptqmodel, which
                                                           # refuses asymmetric v1 unless its own writer stamped it
                                                           ("g32_asym_mixed", 4, 32, False, False, "gptq_v2", MIXED)]:
        path = os.path.join(out, "gptqmodel-" + name)
        model = GPTQModel.load(src, qcfg(bits, group, sym, desc_act, fmt=fmt, dynamic=dynamic), device="cpu",
                               dtype=torch.float32)
        model.quantize([{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in calib], batch_size=1)
        model.save(path)
        del model
        save_file(load_logits(path), os.path.join(path, "logits.safetensors"))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--load":
        save_file(load_logits(sys.argv[2]), sys.argv[3])
        return
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    os.chdir(out)  # gptqmodel writes a logs/ folder into the working directory
    torch.set_num_threads(1)  # the same reduction order as the C++ test's single ATen thread
    layer_cases(out)
    src, calib = tiny_model(out)
    quantized_models(out, src, calib)
    print("gptqmodel oracle written to", out)


if __name__ == "__main__":
    main()
