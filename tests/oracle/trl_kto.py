#!/usr/bin/env python3
"""Oracle: TRL's KTOTrainer on the tiny random Llama of trl_preference.py with a PEFT LoRA adapter of fixed weights.

Usage: trl_kto.py OUT_DIR   (run by ctest as the oracle_trl_kto fixture)

Writes OUT_DIR/base and OUT_DIR/adapter (as trl_preference.py: the policy is the base + adapter, the reference the
base with the adapter off), OUT_DIR/adapter_small (its B scaled by 0.1: a negative KL estimate, which TRL clamps at
0), OUT_DIR/kto.jsonl (plain prompt/completion/label records, both labels, mixed) and
OUT_DIR/kto_chat.jsonl (the same as conversations), OUT_DIR/pairs.jsonl (prompt/chosen/rejected pairs, which TRL
unpairs), OUT_DIR/tokens.json (TRL's prompt_ids/completion_ids/KL_completion_ids/label of each file, the whole set as
one batch), and per case OUT_DIR/<case>/:
  first.json         TRL's loss and logged metrics on the whole set as one batch, before any update
  grads.safetensors  the LoRA gradients of that loss (PEFT's parameter names)
  history.json       the loss and metrics TRL logged at each of STEPS AdamW steps (batch = the whole set)
  adapter/           the adapter after those steps
The options that match qtune's defaults: KTOConfig(beta, desirable_weight, undesirable_weight) with TRL 1.16's
defaults otherwise (loss_type kto, max_length 1024 cut from the right, no precomputed reference: the reference is
the PEFT model under its adapter switched off, as qtune's lora::AdaptersDisabled), train_sampling_strategy
sequential (TRL's default for KTO; qtune's data.shuffle: false), the KL pairs rotated by one within each batch;
the case kto_precomputed sets precompute_ref_log_probs=True (the reference of the records and their KL pairs computed
before training).
"""
import json
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
import warnings  # noqa: E402

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import KTOConfig, KTOTrainer  # noqa: E402

from trl_preference import LR, PAIRS, STEPS, base_model, peft_trainer, random_adapter, tokenizer  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)

CASES = {
    "kto": dict(),
    "kto_weighted": dict(beta=0.5, desirable_weight=1.3, undesirable_weight=0.7),
    "kto_clamped": dict(beta=0.3),
    # The reference's log-probabilities of the records and their KL pairs computed once before training (qtune's
    # train.precompute_ref_log_probs).
    "kto_precomputed": dict(precompute_ref_log_probs=True),
}
# The adapter each case starts from: kto_clamped's has B scaled by 0.1, which on these records turns the KL estimate
# negative, so that TRL's clamp at 0 is what the case checks.
ADAPTERS = {"kto_clamped": "adapter_small"}
# Both labels, in an order where neither alternates: each prompt's KL partner is another record's completion.
ORDER = [(0, True), (1, True), (0, False), (2, True), (1, False), (2, False), (3, False), (3, True)]
RECORDS = [{"prompt": PAIRS[i][0], "completion": PAIRS[i][1 if good else 2], "label": good} for i, good in ORDER]
CHAT = [{"prompt": [{"role": "user", "content": x["prompt"]}],
         "completion": [{"role": "assistant", "content": x["completion"].strip()}], "label": x["label"]}
        for x in RECORDS]
METRICS = ("rewards/", "logps/", "kl")


def kto_trainer(base_dir, adapter_dir, args, tok, rows):
    return peft_trainer(KTOTrainer, base_dir, adapter_dir, args, tok, rows)


def main(out):
    os.makedirs(out, exist_ok=True)
    base_dir, adapter_dir = os.path.join(out, "base"), os.path.join(out, "adapter")
    tok = tokenizer(base_dir)
    base_model(base_dir, len(tok))
    peft = random_adapter(base_dir)
    peft.save_pretrained(adapter_dir)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(0.1)
    peft.save_pretrained(os.path.join(out, "adapter_small"))
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    for name, data in (("kto", RECORDS), ("kto_chat", CHAT), ("pairs", pairs)):
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            for x in data:
                f.write(json.dumps(x) + "\n")

    tokens = {}
    n = len(RECORDS)
    for case, opts in CASES.items():
        case_dir = os.path.join(out, case)
        os.makedirs(case_dir, exist_ok=True)
        args = KTOConfig(output_dir=os.path.join(case_dir, "trl"), per_device_train_batch_size=n,
                         gradient_accumulation_steps=1, max_steps=STEPS, learning_rate=LR, optim="adamw_torch",
                         adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0,
                         lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, logging_steps=1,
                         save_strategy="no", report_to=[], use_cpu=True, seed=7, bf16=False, fp16=False,
                         dataloader_drop_last=False, train_sampling_strategy="sequential", **opts)
        trainer = kto_trainer(base_dir, os.path.join(out, ADAPTERS.get(case, "adapter")), args, tok, RECORDS)
        model = trainer.model
        if not tokens:
            # A paired set is unpaired by the trainer (unpair_preference_dataset) before its KL pairs are built.
            sets = {"kto": trainer.train_dataset,
                    "kto_chat": kto_trainer(base_dir, adapter_dir, args, tok, CHAT).train_dataset,
                    "pairs": kto_trainer(base_dir, adapter_dir, args, tok, pairs).train_dataset}
            for name, data in sets.items():
                tokens[name] = [{k: ex[k] for k in ("prompt_ids", "completion_ids", "KL_completion_ids", "label")}
                                for ex in data]
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
        model.train()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k.startswith(METRICS)}
        assert (metrics["kl"] == 0) == (case == "kto_clamped"), (case, metrics["kl"])
        with open(os.path.join(case_dir, "first.json"), "w") as f:
            json.dump({"loss": loss.item(), **metrics}, f, indent=1)
        save_file({n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters() if p.grad is not None},
                  os.path.join(case_dir, "grads.safetensors"))
        model.zero_grad(set_to_none=True)
        trainer._metrics["train"].clear()
        trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
        with open(os.path.join(case_dir, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        model.save_pretrained(os.path.join(case_dir, "adapter"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({case: {**opts, "adapter": ADAPTERS.get(case, "adapter")} for case, opts in CASES.items()}, f)
    with open(os.path.join(out, "tokens.json"), "w") as f:
        json.dump(tokens, f)
    print(f"trl_kto: {len(CASES)} cases in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
