#!/usr/bin/env python3
"""The peer of `qtune bench train` / `qtune bench decode`: transformers + PEFT on the same shape and settings.

  bench_train_peer.py train --config CONFIG.json --base bf16|fp32|nf4 --batch B --seq T --steps N --warmup W
                            --r R --alpha A [--no-checkpointing] [--device cpu|cuda] [--threads N]
      the config's model class (AutoModelForCausalLM: Llama, Qwen2/3, Gemma 2/3, Phi-3) with random weights (SDPA
      attention), PEFT LoRA on every linear of the decoder ("all-linear", as qtune's all-linear; dropout 0),
      non-reentrant gradient checkpointing, torch.optim.AdamW over the adapters, clipping at 1.0: the step
      qtune's bench times. --base nf4 loads the base through bitsandbytes (BitsAndBytesConfig nf4 + double quant,
      compute dtype bf16 on GPU and fp32 on CPU) from a random 16-bit copy saved to a temporary directory.
  bench_train_peer.py decode --config CONFIG.json --prompt P --new-tokens N [--device ...]
      batch-1 greedy generate() of the bf16 (GPU) / fp32 (CPU) model with its KV cache.

Prints one JSON object, as `qtune bench ... --json` does. Peak memory: torch.cuda.max_memory_allocated on a GPU,
the process's peak RSS on the CPU.
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
warnings.filterwarnings("ignore")
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def load_config(path):
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path) as f:
        keys = json.load(f)
    keys.pop("architectures", None)
    keys.pop("torch_dtype", None)
    return AutoConfig.for_model(keys.pop("model_type", "llama"), **keys)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def attention(model_type):
    # transformers runs Gemma 2's soft-capped scores only in its eager attention.
    return "eager" if model_type == "gemma2" else "sdpa"


def random_model(config, dtype, device):
    config._attn_implementation = attention(config.model_type)
    torch.manual_seed(1)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype on the device: a 7B shape never exists in fp32
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(default)
    return model


def gguf_model(path, dtype, device):
    d, f = os.path.split(os.path.abspath(path))
    config = AutoConfig.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=dtype,
                                                 attn_implementation=attention(config.model_type))
    return model.to(device)


def nf4_model(config, device, gguf=None):
    from transformers import BitsAndBytesConfig
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    tmp = tempfile.mkdtemp(prefix="peer_nf4_")
    if gguf:
        # A GGUF-loaded model refuses save_pretrained: its weights go into a plain model of the same config first.
        src = gguf_model(gguf, compute, torch.device("cpu"))
        keys = {k: v for k, v in src.config.to_dict().items() if k not in ("quantization_config", "model_type")}
        plain = random_model(AutoConfig.for_model(src.config.model_type, **keys), compute, torch.device("cpu"))
        plain.load_state_dict(src.state_dict())
        plain.save_pretrained(tmp)
    else:
        random_model(config, compute, torch.device("cpu")).save_pretrained(tmp)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=compute)
    model = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=bnb, device_map=str(device), dtype=compute,
                                                 attn_implementation=attention(AutoConfig.from_pretrained(tmp).model_type))
    return model, compute


def train(a):
    from peft import LoraConfig, get_peft_model
    device = torch.device(a.device)
    config = load_config(a.config) if a.config else None
    if a.base == "nf4":
        model, dtype = nf4_model(config, device, a.gguf)
    else:
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[a.base]
        model = gguf_model(a.gguf, dtype, device) if a.gguf else random_model(config, dtype, device)
    config = model.config
    if a.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, target_modules="all-linear"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(config.vocab_size, (a.batch, a.seq), generator=gen).to(device)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        value = loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return value

    for _ in range(a.warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync(device)
    secs = time.perf_counter() - t0
    return {"engine": "transformers+peft" + ("+bitsandbytes" if a.base == "nf4" else ""), "base": a.base,
            "device": str(device), "batch": a.batch, "seq": a.seq, "steps": a.steps, "r": a.r, "alpha": a.alpha,
            "checkpointing": a.checkpointing, "threads": torch.get_num_threads(),
            "trainable_params": sum(p.numel() for p in params),
            "tokens_per_s": a.batch * a.seq * a.steps / secs, "seconds_per_step": secs / a.steps,
            "peak_bytes": peak_bytes(device), "last_loss": loss,
            "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                         "peft": __import__("peft").__version__}}


def decode(a):
    device = torch.device(a.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = load_config(a.config)
    model = random_model(config, dtype, device).eval()
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(config.vocab_size, (1, a.prompt), generator=gen).to(device)
    kwargs = dict(do_sample=False, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, pad_token_id=0)
    with torch.no_grad():
        model.generate(prompt, **kwargs)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        model(prompt)
        sync(device)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(prompt, **kwargs)
        sync(device)
        secs = time.perf_counter() - t0
    new = out.shape[1] - a.prompt
    # generate() includes one prefill; its own decode rate is what is left after it.
    return {"engine": "transformers", "base": str(dtype).replace("torch.", ""), "device": str(device),
            "prompt": a.prompt, "new_tokens": new, "prefill_seconds": prefill,
            "decode_tokens_per_s": (new - 1) / max(secs - prefill, 1e-9), "peak_bytes": peak_bytes(device)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["train", "decode"])
    p.add_argument("--config", help="the model shape (random weights)")
    p.add_argument("--gguf", help="or a real model's .gguf (transformers dequantizes it)")
    p.add_argument("--base", default="bf16", choices=["bf16", "fp32", "fp16", "nf4"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(json.dumps(train(a) if a.mode == "train" else decode(a)))


if __name__ == "__main__":
    sys.exit(main())
