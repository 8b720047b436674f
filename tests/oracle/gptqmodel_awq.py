#!/usr/bin/env python3
"""Oracle: gptqmodel 7.6.0's AWQ (its port of llm-awq / AutoAWQ; AutoAWQ itself is archived) is the truth for AWQ.

Default mode (the oracle_gptqmodel_awq fixture), OUT_DIR:
  pieces.safetensors + pieces.json  a weight W [128, 256], a second W2 [64, 256] and inputs X [1024, 256] with uneven
                                    channels, and for several grids what gptqmodel's AWQProcessor computes from them:
                                    pseudo_quantize_tensor (values, scales, zeros), the weight mean of [W, W2], the
                                    clipping search, and the scale search with W alone as the scored block.
  tiny-mha/, tiny-gqa/              tiny random Llamas (fp32; 4 kv heads, so v_proj → o_proj is scaled, and 2) and
                                    calibration.json (token ids)
  gptqmodel-<case>/                 gptqmodel's AWQ (GEMM) checkpoint of one of them on those ids, and
                                    logits.safetensors: what transformers + gptqmodel compute with it on a probe.
--load QDIR OUT.safetensors: transformers + gptqmodel load QDIR (qtune's checkpoint or gptqmodel's) and write the
                            probe's logits and every AWQ linear's dequantized weight.

One fix is applied to gptqmodel here (fix_cpu_master_copy): its scale search keeps "a CPU master copy" of each weight
with .to(float32).cpu().contiguous(), which for an fp32 CPU weight is the weight itself, so the "restore" after each
candidate restores nothing and every candidate is scored on the previous ones' quantized weights (on a GPU, or in
fp16, it is a copy). AutoAWQ restores the weights from a state_dict copy; the fix makes the copy a copy.

gptqmodel's AWQ also differs from AutoAWQ in one heuristic, which its whole-model run keeps: the weight mean of a group is
multiplied by the mean |w| of the previous subset, which moves the scales through the 1e-4 in their denominator. So
its whole-model checkpoints are compared with qtune's by quality (see the C++ test), its pieces bit for bit.
"""
import json
import os
import sys
import threading
import types

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # with 1 (its default on 2 cores) its loader pool refuses to start

import torch
from safetensors.torch import save_file

PROBE = [[1, 5, 9, 77, 200, 13, 42, 3, 250, 128, 64, 7, 99, 31, 180, 2]]
GRIDS = [(32, False), (64, True), (128, False)]  # (group size, symmetric)


def fix_cpu_master_copy():
    import inspect
    import textwrap
    from gptqmodel.looper import awq_processor as ap
    if getattr(ap.AWQProcessor, "_qtune_fixed", False):
        return
    src = textwrap.dedent(inspect.getsource(ap.AWQProcessor._compute_best_scale))
    old = "fc.weight.detach().to(torch.float32).cpu().contiguous()"
    assert src.count(old) == 1, "gptqmodel's _compute_best_scale changed: review fix_cpu_master_copy"
    scope = {}
    exec(src.replace(old, "fc.weight.detach().to(torch.float32).cpu().clone()"), ap.__dict__, scope)
    ap.AWQProcessor._compute_best_scale = scope["_compute_best_scale"]
    ap.AWQProcessor._qtune_fixed = True


def allow_fp32_awq_kernel():
    # gptqmodel's AWQ torch kernel refuses fp32 models and computes in fp16. The format is the dequantized weight,
    # which is compared exactly; the matmul is done in fp32 so that the logits compare at fp32 precision.
    from gptqmodel.nn_modules.qlinear.torch_awq import AwqTorchLinear
    from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm
    AwqTorchLinear.SUPPORTS_DTYPES = [torch.float16, torch.bfloat16, torch.float32]

    def dequantized(self):
        return dequantize_gemm(self.qweight, self.qzeros, self.scales, self.bits, self.group_size)

    def forward(self, x):
        out = x.reshape(-1, x.shape[-1]).float() @ dequantized(self).float()
        if self.bias is not None:
            out = out + self.bias.float()
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    AwqTorchLinear.dequantized = dequantized
    AwqTorchLinear.forward = forward


def processor(group, sym):
    from gptqmodel.looper.awq_processor import AWQProcessor
    p = AWQProcessor.__new__(AWQProcessor)  # only the methods below, which read these attributes
    p.qcfg = types.SimpleNamespace(bits=4, group_size=group, sym=sym, scale_search_chunked_activations=False)
    p.duo_scaling = True
    p._scale_context = threading.local()
    p.max_chunk_memory = 1 << 30
    p.gptq_model = types.SimpleNamespace(rotary_embedding=None)
    p._get_root_rotary = lambda: None
    p._quant_batch_size = None
    return p


def pieces(out):
    from gptqmodel.looper.awq_processor import _compute_awq_weight_mean
    fix_cpu_master_copy()
    g = torch.Generator().manual_seed(11)
    w = torch.randn(128, 256, generator=g) * 0.05
    w[:, 7] *= 6  # a few salient input channels, as AWQ is about
    w2 = torch.randn(64, 256, generator=g) * 0.03
    x = torch.randn(1024, 256, generator=g) * (torch.rand(256, generator=g) * 3 + 0.1)
    x[:, 40] *= 8
    tensors, cases = {"W": w, "W2": w2, "X": x}, []
    for group, sym in GRIDS:
        name = f"g{group}_{'sym' if sym else 'asym'}"
        p = processor(group, sym)
        wq, scales, zeros = p.pseudo_quantize_tensor(w.clone())
        tensors[name + ".values"] = wq.contiguous()
        tensors[name + ".scales"] = scales.float().contiguous()  # [out, groups]
        tensors[name + ".zeros"] = zeros.float().contiguous()
        lin, lin2 = torch.nn.Linear(256, 128, bias=False), torch.nn.Linear(256, 64, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin2.weight.copy_(w2)
        tensors[name + ".weight_mean"] = _compute_awq_weight_mean([lin, lin2], group).contiguous()
        tensors[name + ".clip"] = p._compute_best_clip(w.clone(), x.clone()).reshape(128, -1).contiguous()
        x_mean = x.abs().view(-1, 256).float().sum(0) / x.shape[0]
        with torch.inference_mode():
            ref = lin(x)
            best, loss = p._compute_best_scale(x, _compute_awq_weight_mean([lin], group), x_mean, lin, [lin], ref, {})
        tensors[name + ".best_scales"] = best.float().contiguous()
        cases.append(dict(name=name, group_size=group, sym=sym, loss=float(loss)))
    tensors["x_mean"] = (x.abs().view(-1, 256).float().sum(0) / x.shape[0]).contiguous()
    save_file(tensors, os.path.join(out, "pieces.safetensors"))
    with open(os.path.join(out, "pieces.json"), "w") as f:
        json.dump(cases, f, indent=1)


def tiny_model(out, name, kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
                      intermediate_size=256, vocab_size=256, max_position_embeddings=128, bos_token_id=1,
                      eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    path = os.path.join(out, name)
    model.save_pretrained(path)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(256)}, unk_token="t3"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="t0", bos_token="t1", eos_token="t2",
                            unk_token="t3").save_pretrained(path)
    with torch.no_grad():
        save_file({"logits": model(torch.tensor(PROBE)).logits.float().contiguous()},
                  os.path.join(path, "logits.safetensors"))
    return path


def load_logits(qdir):
    from transformers import AutoModelForCausalLM, AwqConfig
    allow_fp32_awq_kernel()
    with open(os.path.join(qdir, "config.json")) as f:
        q = json.load(f)["quantization_config"]
    model = AutoModelForCausalLM.from_pretrained(
        qdir, device_map="cpu", dtype=torch.float32,
        quantization_config=AwqConfig(bits=q["bits"], group_size=q["group_size"], zero_point=q["zero_point"],
                                      backend="torch_awq")).eval()
    out = {}
    with torch.no_grad():
        out["logits"] = model(torch.tensor(PROBE)).logits.float().contiguous()
        for name, module in model.named_modules():
            if hasattr(module, "dequantized"):  # [in, out] fp16
                out[name + ".dequantized"] = module.dequantized().float().t().contiguous()
    return out


def quantized_models(out, calib):
    from gptqmodel import GPTQModel, QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD
    from gptqmodel.utils.backend import BACKEND
    allow_fp32_awq_kernel()
    fix_cpu_master_copy()
    for name, src, group, sym in [("mha_g32_asym", "tiny-mha", 32, False), ("gqa_g64_sym", "tiny-gqa", 64, True)]:
        path = os.path.join(out, "gptqmodel-" + name)
        qc = QuantizeConfig(bits=4, group_size=group, sym=sym, method=METHOD.AWQ, format=FORMAT.GEMM, fallback=None)
        model = GPTQModel.load(os.path.join(out, src), qc, device="cpu", dtype=torch.float32)
        model.quantize([{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in calib], batch_size=1,
                       backend=BACKEND.AWQ_TORCH)
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
    pieces(out)
    tiny_model(out, "tiny-mha", 4)
    tiny_model(out, "tiny-gqa", 2)
    g = torch.Generator().manual_seed(123)
    calib = [torch.randint(4, 256, (32,), generator=g).tolist() for _ in range(16)]
    with open(os.path.join(out, "calibration.json"), "w") as f:
        json.dump(calib, f)
    quantized_models(out, calib)
    print("gptqmodel AWQ oracle written to", out)


if __name__ == "__main__":
    main()
