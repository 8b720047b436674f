#!/usr/bin/env python3
"""Oracle: TRL's preference trainers on a tiny random Llama with a PEFT LoRA adapter: DPOTrainer for each DPO loss
type, and trl.experimental's ORPOTrainer and CPOTrainer (SimPO, CPO-SimPO).

Usage: trl_preference.py OUT_DIR   (run by ctest as the oracle_trl_preference fixture)

Writes OUT_DIR/base (a tiny Llama and a byte-level BPE tokenizer.json), OUT_DIR/adapter (the PEFT adapter both sides
start from: fixed random A and non-zero B, so the policy differs from the reference, the base with the adapter off),
OUT_DIR/pairs.jsonl (plain prompt/chosen/rejected pairs) and OUT_DIR/implicit.jsonl (the same pairs with the prompt
left implicit), OUT_DIR/tokens.json (TRL's prompt_ids/chosen_ids/rejected_ids of both files), and per case
OUT_DIR/<case>/:
  first.json              TRL's loss and logged metrics on the whole data set as one batch, before any update
                          (ORPO and CPO: their get_batch_loss_metrics)
  grads.safetensors       the LoRA gradients of that loss (PEFT's parameter names)
  history.json            the loss and metrics TRL logged at each of STEPS AdamW steps (batch = the whole set)
  adapter/                the adapter after those steps (save_pretrained)
The options that match qtune's defaults: DPOConfig(beta, loss_type=[...], label_smoothing) with TRL 1.16's
defaults otherwise (max_length 1024, truncation_mode keep_start, no precomputed reference: the reference is the
PEFT model under disable_adapter(), as qtune's lora::AdaptersDisabled); the case sigmoid_precomputed sets
precompute_ref_log_probs=True (the reference's log-probabilities computed before training, under disable_adapter()).
"""
import json
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
import warnings  # noqa: E402

warnings.filterwarnings("ignore")
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOConfig, CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)

STEPS, LR = 3, 1e-3
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"])
CASES = {
    "sigmoid": dict(loss_type=["sigmoid"]),
    "ipo": dict(loss_type=["ipo"], beta=0.5),
    "robust": dict(loss_type=["robust"], label_smoothing=0.2),
    "hinge": dict(loss_type=["hinge"], beta=0.3),
    # The reference's log-probabilities computed once before training (qtune's train.precompute_ref_log_probs).
    "sigmoid_precomputed": dict(loss_type=["sigmoid"], precompute_ref_log_probs=True),
}
FREE_CASES = {
    "orpo": (ORPOConfig, ORPOTrainer, dict(beta=0.2)),
    "simpo": (CPOConfig, CPOTrainer, dict(loss_type="simpo", beta=2.0, simpo_gamma=0.5, cpo_alpha=0.0)),
    "cpo_simpo": (CPOConfig, CPOTrainer, dict(loss_type="simpo", beta=2.0, simpo_gamma=0.8, cpo_alpha=0.5,
                                              label_smoothing=0.1)),
}
# Plain ChatML (OpenHermes' template, one qtune's data.chat_template auto recognises).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
PAIRS = [
    ("Question: what colour is the sky?\nAnswer:", " The sky is blue.", " It is green, mostly."),
    ("Question: where does the sun rise?\nAnswer:", " In the east.", " The sun rises in the west."),
    ("Tell me a fact about cats.", " Cats sleep for most of the day.", " Cats are a kind of fish."),
    ("Name a prime number.", " Seven is prime.", " Nine."),
]


def tokenizer(out):
    corpus = [p + c for p, c, _ in PAIRS] + [p + r for p, _, r in PAIRS] * 2
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=320, min_frequency=1, show_progress=False, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    return fast


def base_model(out, vocab):
    config = LlamaConfig(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=128, rms_norm_eps=1e-5,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(out)


def random_adapter(base_dir):
    peft = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32), LoraConfig(**LORA))
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return peft


def peft_trainer(trainer_class, base_dir, adapter_dir, args, tok, rows):
    """A TRL trainer (DPOTrainer, KTOTrainer) on a fresh PEFT adapter (peft_config: the reference is the model under
    disable_adapter()), whose weights are then set to the saved adapter's (a PeftModel passed in would get a frozen
    "ref" copy of its adapter as the reference instead)."""
    model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    trainer = trainer_class(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows),
                            peft_config=LoraConfig(**LORA))
    result = set_peft_model_state_dict(trainer.model, load_file(os.path.join(adapter_dir, "adapter_model.safetensors")))
    assert not result.unexpected_keys, result.unexpected_keys
    assert "ref" not in trainer.model.peft_config
    return trainer


def dpo_trainer(base_dir, adapter_dir, args, tok, rows):
    return peft_trainer(DPOTrainer, base_dir, adapter_dir, args, tok, rows)


def main(out):
    os.makedirs(out, exist_ok=True)
    base_dir, adapter_dir = os.path.join(out, "base"), os.path.join(out, "adapter")
    tok = tokenizer(base_dir)
    base_model(base_dir, len(tok))
    random_adapter(base_dir).save_pretrained(adapter_dir)
    with open(os.path.join(out, "pairs.jsonl"), "w") as f:
        for p, c, r in PAIRS:
            f.write(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n")
    with open(os.path.join(out, "implicit.jsonl"), "w") as f:
        for p, c, r in PAIRS:
            f.write(json.dumps({"chosen": p + c, "rejected": p + r}) + "\n")
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    implicit = [{"chosen": p + c, "rejected": p + r} for p, c, r in PAIRS]
    # Conversations: the prompt as a user turn, each answer as the assistant's; and the same pairs as whole
    # conversations with the prompt implicit.
    chat = [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c.strip()}],
             "rejected": [{"role": "assistant", "content": r.strip()}]} for p, c, r in PAIRS]
    chat_implicit = [{"chosen": x["prompt"] + x["chosen"], "rejected": x["prompt"] + x["rejected"]} for x in chat]
    for name, data in (("chat", chat), ("chat_implicit", chat_implicit)):
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            for x in data:
                f.write(json.dumps(x) + "\n")

    tokens = {}
    for case, opts in CASES.items():
        case_dir = os.path.join(out, case)
        os.makedirs(case_dir, exist_ok=True)
        args = DPOConfig(output_dir=os.path.join(case_dir, "trl"), per_device_train_batch_size=len(PAIRS),
                         gradient_accumulation_steps=1, max_steps=STEPS, learning_rate=LR, optim="adamw_torch",
                         adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0,
                         lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, logging_steps=1,
                         save_strategy="no", report_to=[], use_cpu=True, seed=7, bf16=False, fp16=False,
                         dataloader_drop_last=False, **opts)
        trainer = dpo_trainer(base_dir, adapter_dir, args, tok, rows)
        model = trainer.model
        if not tokens:
            sets = {"pairs": trainer.train_dataset}
            for name, data in (("implicit", implicit), ("chat", chat), ("chat_implicit", chat_implicit)):
                sets[name] = dpo_trainer(base_dir, adapter_dir, args, tok, data).train_dataset
            for name, data in sets.items():
                tokens[name] = [{k: ex[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for ex in data]
        # The first step's loss, metrics and gradients on the whole set as one batch.
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
        model.train()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()
                   if k.startswith("rewards/") or k.startswith("logps/")}
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
    # Reference-free objectives from trl.experimental: ORPO, and SimPO as CPOTrainer's loss_type "simpo" (cpo_alpha 0:
    # the SimPO paper's loss; TRL's default 1 adds CPO's NLL term, qtune's simpo.cpo_alpha).
    for case, (config_cls, trainer_cls, opts) in FREE_CASES.items():
        case_dir = os.path.join(out, case)
        os.makedirs(case_dir, exist_ok=True)
        args = config_cls(output_dir=os.path.join(case_dir, "trl"), per_device_train_batch_size=len(PAIRS),
                          gradient_accumulation_steps=1, max_steps=STEPS, learning_rate=LR, optim="adamw_torch",
                          weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0,
                          logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=7, bf16=False,
                          fp16=False, **opts)
        model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        trainer = trainer_cls(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows),
                              peft_config=LoraConfig(**LORA))
        set_peft_model_state_dict(trainer.model, load_file(os.path.join(adapter_dir, "adapter_model.safetensors")))
        model = trainer.model
        data = trainer.train_dataset
        tokens[case] = [{"prompt_ids": ex["prompt_input_ids"],
                         "chosen_ids": ex["chosen_input_ids"][len(ex["prompt_input_ids"]):],
                         "rejected_ids": ex["rejected_input_ids"][len(ex["prompt_input_ids"]):]} for ex in data]
        batch = trainer.data_collator([data[i] for i in range(len(PAIRS))])
        model.train()
        loss, metrics = trainer.get_batch_loss_metrics(model, batch)
        loss.backward()
        with open(os.path.join(case_dir, "first.json"), "w") as f:
            json.dump({"loss": loss.item(), **{k: float(v) for k, v in metrics.items()}}, f, indent=1)
        save_file({n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters() if p.grad is not None},
                  os.path.join(case_dir, "grads.safetensors"))
        model.zero_grad(set_to_none=True)
        trainer._stored_metrics.clear()
        trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
        with open(os.path.join(case_dir, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        model.save_pretrained(os.path.join(case_dir, "adapter"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({**CASES, **{k: v[2] for k, v in FREE_CASES.items()}}, f)
    with open(os.path.join(out, "tokens.json"), "w") as f:
        json.dump(tokens, f)
    print(f"trl_preference: {len(CASES)} cases in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
