#!/usr/bin/env python3
"""Oracle: llama.cpp (llama-cpp-python, vocab only) tokenizes GGUF vocabularies that qtune must read as it does, and
transformers decodes ids with the stories260K tokenizer. The C++ tests (OracleGgufTokenizer) load each file with
data/gguf_tokenizer.h and compare.

Files written to OUT_DIR (the model hyperparameters are stories260K's, so that llama.cpp loads them; no tensors):
  SentencePiece ("llama") vocabularies, stories260K's own with one change each:
    sp_chatml        + <|im_start|>, <|im_end|> typed CONTROL and <tool> typed USER_DEFINED (a ChatML fine-tune)
    sp_unknown_pads  + [PAD0] .. [PAD2] typed UNKNOWN (Phi-3 pads its vocabulary so)
    sp_unk_control   <unk> (id 0) typed CONTROL (Gemma 3's GGUF)
    sp_no_types      without tokenizer.ggml.token_type
  byte-level BPE ("gpt2") vocabularies: one BPE trained with merges across word boundaries (so that every pre-tokenizer
  split changes the ids), two whole words in its vocabulary that no merge reaches (" việc", " hợp": only ignore_merges
  finds them), <|begin_of_text|> / <|end_of_text|> typed CONTROL, no add_bos_token key:
    bpe_<pre>        tokenizer.ggml.pre = <pre>, for each name of PRE_NAMES; bpe_missing has no tokenizer.ggml.pre

OUT_DIR/manifest.json: {"files": {name: {"path", "texts": [{"text", "ids": llama.cpp's ids without BOS, special
tokens parsed, "ids_with_specials": with what the vocabulary adds}], "bos", "eos", "n_vocab"}}, "decode": {"model":
the stories260K directory, "cases": [{"ids", "keep": transformers' decode(ids), "skip": with skip_special_tokens}]}}

Usage: gguf_tokenizers.py OUT_DIR   (run by ctest as the oracle_gguf_tokenizers fixture)
       gguf_tokenizers.py --hf-tokenize DIR TEXTS.json OUT.json   (transformers' AutoTokenizer on DIR: the ids of each
       text without and with special tokens added; for qtune convert's tokenizer files)
"""
import json
import os
import sys

import gguf
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bpe_tokenizers import CORPUS, training_text  # noqa: E402  (the same multilingual corpus)

# Every tokenizer.ggml.pre qtune reads that llama.cpp knows ("gpt2" is an alias of qtune's only); None: the key is absent.
PRE_NAMES = [None, "default", "gpt-2", "llama-bpe", "llama3", "llama-v3", "smaug-bpe", "falcon3", "pixtral",
             "qwen2", "deepseek-r1-qwen", "tekken", "smollm", "starcoder", "refact", "codeshell", "command-r"]
# Words the BPE vocabulary holds whole but no merge reaches.
WHOLE_WORDS = [" việc", " hợp"]
BPE_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"]
# Merges ranked before the trained ones, each across a boundary that some pre-tokenizers split at and others do not:
# "'t" (GPT-2's contractions; llama.cpp's default regex isolates "'" first), " ..." (GPT-2 and Llama 3 keep the space
# with the punctuation, the default regex does not), "lC" and "eW" (a case change: Tekken splits there).
EXTRA_MERGES = [("'", "t"), ("Ġ", ".."), ("Ġ..", "."), ("l", "C"), ("e", "W")]

CHATML_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
SP_TEXTS = [
    "<|im_start|>user\nHi<|im_end|><tool>x",
    CHATML_PROMPT,
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>",
    " <|im_end|> spaced <tool> ",
    "<tool><tool>x<|im_start|><|im_end|>",
    "<s>a</s> <unk>b",
    "a<unk>",
    "[PAD1] x[PAD2]y [PAD0]",
    "Once upon a time, there was a little girl named Lily.",
    "  leading spaces and\ttabs\n\nnewlines  ",
    "Émilie a mangé des crêpes à Paris; naïve façade. 日本語 🙂",
    "",
]
BPE_TEXTS = [
    "don't stop", "wait ...", "a (b)", "12345 and 2026, 3.14159", "x=1+2; y<=3 | z^2 ~ $5 `q`",
    " việc hợp", "Hello việc hợp world",
    "camelCaseWord HTTPServer XMLHttpRequest iPhone McDonald's",
    "<|begin_of_text|>Hi there<|end_of_text|>",
]


def stories260k():
    shared = os.environ.get("QTUNE_SHARED_DIR",
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared"))
    return os.path.join(shared, "originals", "stories260K.gguf"), os.path.join(shared, "models", "stories260K")


def read_fields(path):
    """The metadata of a GGUF as {key: (value, type, element type)}, in file order."""
    r = gguf.GGUFReader(path)
    out = {}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        out[key] = (field.contents(), field.types[0], sub)
    return out


def write_gguf(path, fields):
    w = gguf.GGUFWriter(path, arch=fields["general.architecture"][0])
    for key, (value, vtype, sub) in fields.items():
        if key == "general.architecture":
            continue
        w.add_key_value(key, value, vtype, sub_type=sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def array(values, sub):
    return (list(values), gguf.GGUFValueType.ARRAY, sub)


def sp_variants(base):
    T, S, I = gguf.GGUFValueType.STRING, gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.INT32
    tokens, scores, types = (base[k][0] for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                  "tokenizer.ggml.token_type"))

    def with_tokens(extra):
        f = dict(base)
        f["tokenizer.ggml.tokens"] = array(tokens + [t for t, _ in extra], T)
        f["tokenizer.ggml.scores"] = array(scores + [0.0] * len(extra), S)
        f["tokenizer.ggml.token_type"] = array(types + [k for _, k in extra], I)
        return f

    out = {
        "sp_chatml": with_tokens([("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool>", 4)]),
        "sp_unknown_pads": with_tokens([(f"[PAD{i}]", 2) for i in range(3)]),
    }
    f = dict(base)
    f["tokenizer.ggml.token_type"] = array([3] + types[1:], I)
    out["sp_unk_control"] = f
    f = dict(base)
    del f["tokenizer.ggml.token_type"]
    out["sp_no_types"] = f
    return out


def byte_level(text):
    from tokenizers import pre_tokenizers
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)[0][0]


def bpe_vocabulary():
    """tokens, types and merges of a byte-level BPE trained without a pre-tokenizer split (merges cross spaces,
    punctuation and digits), plus WHOLE_WORDS and BPE_SPECIALS."""
    import random

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Without the corpus' special-looking strings ("</s>", "<|endoftext|>"): llama.cpp would type them CONTROL.
    lines = [l for l in training_text(random.Random(20240607))
             if "việc" not in l and "<" not in l and "[" not in l] + BPE_TEXTS[:5] * 20
    tok.train_from_iterator(lines, trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    for a, b in EXTRA_MERGES:
        assert a in tokens and b in tokens, (a, b)
        if a + b not in tokens:
            tokens.append(a + b)
    merges = [f"{a} {b}" for a, b in EXTRA_MERGES] + [m for m in merges if tuple(m.split(" ")) not in EXTRA_MERGES]
    for w in WHOLE_WORDS:
        assert byte_level(w) not in vocab, w
        tokens.append(byte_level(w))
    types = [1] * len(tokens) + [3] * len(BPE_SPECIALS)
    tokens += BPE_SPECIALS
    return tokens, types, merges


def bpe_variants(base):
    tokens, types, merges = bpe_vocabulary()
    T, I, U = gguf.GGUFValueType.STRING, gguf.GGUFValueType.INT32, gguf.GGUFValueType.UINT32
    common = {k: v for k, v in base.items() if not k.startswith("tokenizer.")}
    common["tokenizer.ggml.model"] = ("gpt2", T, None)
    common["tokenizer.ggml.tokens"] = array(tokens, T)
    common["tokenizer.ggml.token_type"] = array(types, I)
    common["tokenizer.ggml.merges"] = array(merges, T)
    common["tokenizer.ggml.bos_token_id"] = (tokens.index(BPE_SPECIALS[0]), U, None)
    common["tokenizer.ggml.eos_token_id"] = (tokens.index(BPE_SPECIALS[1]), U, None)
    out = {}
    for pre in PRE_NAMES:
        f = dict(common)
        if pre is not None:
            f["tokenizer.ggml.pre"] = (pre, T, None)
        out["bpe_" + (pre or "missing")] = f
    return out


def llama_cpp_ids(path, texts, fields):
    """llama.cpp's ids of each text, and why a text is left out of a comparison (see the module docstring)."""
    import unicodedata

    try:
        import llama_cpp
    except ImportError as e:  # pragma: no cover
        sys.exit(f"llama_cpp is not importable ({e}): run scripts/setup.sh, which builds llama-cpp-python")
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    tokens = fields["tokenizer.ggml.tokens"][0]
    types = fields.get("tokenizer.ggml.token_type", ([1] * len(tokens),))[0]
    special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    # Tokens llama.cpp makes CONTROL by their text alone ("</s>", "<|endoftext|>", ... as end of generation),
    # whatever the file types them: a heuristic qtune does not copy.
    by_name = [tokens[i] for i in range(len(tokens)) if types[i] not in (2, 3, 4)
               and llama_cpp.llama_vocab_get_attr(llm._model.vocab, i) & special]
    file_specials = [tokens[i] for i in range(len(tokens)) if types[i] in (2, 3, 4)]
    tekken = fields.get("tokenizer.ggml.pre", (None,))[0] == "tekken"
    out = {"n_vocab": llm.n_vocab(), "bos": llm.token_bos(), "eos": llm.token_eos(), "typed_by_name": by_name,
           "texts": []}
    for text in texts:
        b = text.encode("utf-8")
        entry = {"text": text, "ids": llm.tokenize(b, add_bos=False, special=True),
                 "ids_with_specials": llm.tokenize(b, add_bos=True, special=True)}
        named = [t for t in by_name if t in text]
        if named:
            entry["skip"] = f"llama.cpp types {named[0]} CONTROL by its name"
        elif tekken and any(unicodedata.category(c).startswith("M") for c in text):
            entry["skip"] = ("a combining mark: llama.cpp's rewrite of Tekken's regex leaves \\p{M} out of its letter "
                             "classes, the tokenizer.json regex qtune keeps has it")
        # transformers' Metaspace adds no "▁" to a stretch that already starts with one (or with a space, which it
        # becomes); llama.cpp always does.
        starts = [text] + [text[text.index(sp) + len(sp):] for sp in file_specials if sp in text]
        entry["stretch_starts_with_space"] = any(st.startswith((" ", "\u2581")) for st in starts)
        out["texts"].append(entry)
    return out


def decode_cases(model_dir):
    """transformers' decode of id lists holding <unk>, <s>, </s>, byte tokens and invalid UTF-8, keeping and
    skipping special tokens."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    text_ids = tok("Once upon a time, Lily\nsaw a ☃.", add_special_tokens=False).input_ids
    byte = lambda b: tok.convert_tokens_to_ids(f"<0x{b:02X}>")  # noqa: E731
    lists = [[0, 300], [300, 0, 301], [1, 300, 2], [0], [1], [], [1] + text_ids + [2], text_ids[:3] + [0] + text_ids[3:],
             [0] + text_ids, [byte(0xE2), byte(0x98)], [byte(0xE2), 300, byte(0x83)], [13, 13, 300], [2, 1, 0, 13]]
    rng = np.random.default_rng(7)
    lists += [rng.integers(0, tok.vocab_size, size=n).tolist() for n in (5, 12, 30)]
    return {"model": model_dir,
            "cases": [{"ids": ids, "keep": tok.decode(ids, skip_special_tokens=False),
                       "skip": tok.decode(ids, skip_special_tokens=True)} for ids in lists]}


def hf_tokenize(directory, texts_file, out_file):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(directory)
    with open(texts_file, encoding="utf-8") as f:
        texts = json.load(f)
    out = [{"text": t, "ids": tok(t, add_special_tokens=False).input_ids,
            "ids_with_specials": tok(t).input_ids} for t in texts]
    with open(out_file, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--hf-tokenize":
        return hf_tokenize(*sys.argv[2:])
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    gguf_path, model_dir = stories260k()
    if not os.path.exists(gguf_path) or not os.path.isdir(model_dir):
        # As the other oracles: without ../shared the tests that need it skip, and the fixture must not fail theirs.
        with open(os.path.join(out_dir, "manifest.json"), "w") as f:
            json.dump({"skipped": f"{gguf_path} or {model_dir} is absent"}, f)
        print(f"note: {gguf_path} or {model_dir} is absent: nothing written")
        return
    base = read_fields(gguf_path)
    files = {}
    for name, fields in sp_variants(base).items():
        files[name] = (fields, SP_TEXTS + CORPUS)
    for name, fields in bpe_variants(base).items():
        files[name] = (fields, BPE_TEXTS + CORPUS)
    manifest = {"files": {}}
    for name, (fields, texts) in files.items():
        path = os.path.join(out_dir, name + ".gguf")
        if os.path.exists(path):
            os.remove(path)
        write_gguf(path, fields)
        manifest["files"][name] = {"path": path, **llama_cpp_ids(path, texts, fields)}
    manifest["decode"] = decode_cases(model_dir)
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False)
    print(f"wrote {len(files)} GGUF vocabularies and llama.cpp's ids to {out_dir}")


if __name__ == "__main__":
    main()
