#!/usr/bin/env python3
"""Oracle: bitsandbytes' 8-bit AdamW (bnb.optim.AdamW8bit, blockwise, its CPU backend) takes a few steps on fixed
parameters and gradients with a learning rate that changes every step. The C++ oracle test (OracleBnbAdamW8bit)
runs qtune's adamw_8bit on the same inputs and must agree bit for bit: parameters, 8-bit codes and absmax of both
moments, and the fp32 state of the parameter below min_8bit_size.

Writes OUT_DIR/adamw8bit.safetensors holding: hparams (fp64 [beta1, beta2, eps, weight_decay]), lr (fp64 [steps]),
map.signed / map.unsigned (create_dynamic_map), and per parameter NAME: NAME.init, grad.S.NAME for each step S,
NAME.final, and its state after the last step: NAME.state1 / NAME.state2 (uint8 codes, flattened, or fp32 for
small parameters) and NAME.absmax1 / NAME.absmax2 (8-bit only).

Usage: bnb_adamw8bit.py OUT_DIR   (run by ctest as the oracle_bnb_adamw8bit fixture)
"""
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import bitsandbytes  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.01
LRS = [1e-3, 2e-3, 5e-4, 1e-3, 3e-3, 1e-4, 2e-3]


def cases(gen: torch.Generator):
    """(name, shape, per-element gradient scale). 65x67 = 17 blocks of 256 and a 3-element tail (not a multiple of
    8 either, bitsandbytes' scalar tail path); 32x256 with its first block's gradient always zero (an all-zero
    block: absmax 0); 300 stays below min_8bit_size (fp32 state)."""
    tail_scale = torch.logspace(-3, 1, 65 * 67).reshape(65, 67)  # moments spanning the dynamic range
    yield "w_tail", torch.randn(65, 67, generator=gen) * 0.05, tail_scale
    zero_first = torch.ones(32, 256)
    zero_first.view(-1)[:256] = 0
    yield "w_blocks", torch.randn(32, 256, generator=gen) * 0.02, zero_first
    yield "b_small", torch.randn(300, generator=gen) * 0.1, torch.ones(300)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(2024)
    tensors = {
        "hparams": torch.tensor([BETAS[0], BETAS[1], EPS, WEIGHT_DECAY], dtype=torch.float64),
        "lr": torch.tensor(LRS, dtype=torch.float64),
        "map.signed": F.create_dynamic_map(signed=True),
        "map.unsigned": F.create_dynamic_map(signed=False),
    }
    params = {}
    for name, init, scale in cases(gen):
        tensors[f"{name}.init"] = init.clone()
        params[name] = (torch.nn.Parameter(init.clone()), scale)
    opt = bitsandbytes.optim.AdamW8bit([p for p, _ in params.values()], lr=LRS[0], betas=BETAS, eps=EPS,
                                       weight_decay=WEIGHT_DECAY)
    for step, lr in enumerate(LRS):
        for group in opt.param_groups:
            group["lr"] = lr
        for name, (p, scale) in params.items():
            grad = torch.randn(p.shape, generator=gen) * scale
            tensors[f"grad.{step}.{name}"] = grad
            p.grad = grad.clone()
        opt.step()
    for name, (p, _) in params.items():
        state = opt.state[p]
        tensors[f"{name}.final"] = p.detach().clone()
        tensors[f"{name}.state1"] = state["state1"].reshape(-1).clone()
        tensors[f"{name}.state2"] = state["state2"].reshape(-1).clone()
        if state["state1"].dtype == torch.uint8:
            tensors[f"{name}.absmax1"] = state["absmax1"].clone()
            tensors[f"{name}.absmax2"] = state["absmax2"].clone()
    assert opt.state[params["w_tail"][0]]["state1"].dtype == torch.uint8
    assert opt.state[params["b_small"][0]]["state1"].dtype == torch.float32
    path = os.path.join(out_dir, "adamw8bit.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path + ".tmp",
              metadata={"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__})
    os.replace(path + ".tmp", path)
    print(f"wrote {len(params)} parameters x {len(LRS)} steps to {path}")


if __name__ == "__main__":
    main()
