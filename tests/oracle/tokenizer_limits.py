#!/usr/bin/env python3
"""Oracle: what Hugging Face `tokenizers` (and transformers' converters) do with tokenizer files at the edges that
qtune must survive: a vocabulary with one huge id, components nested past serde_json's recursion limit, a Mistral
Tekken file and its conversion. The C++ tests (OracleTokenizerLimits) load the same files with qtune.

Writes under OUT_DIR:
  sparse_ids/tokenizer.json   a byte-level BPE whose last merged token has id 400,000,000 (a 1 KB file); with
              expected.json: HF's ids and decoded text for the corpus, its pieces and decoding of ids around the huge one,
              get_vocab_size()
  nested/<kind>_<depth>.json  a good tokenizer.json whose normalizer / pre_tokenizer / decoder / post_processor is a
              Sequence nested `depth` times: the deepest HF loads, one more, and 60,000 (a 2 MB file); hf.json says
              which HF loads
  tekken/tekken.json          a small tekken.json in mistral-common's format (byte ranks, its regex, 1,000 special
              tokens as Mistral ships them); tekken_converted/tokenizer.json what transformers' MistralConverter makes
              of it (saved by save_pretrained), with expected.json: HF's ids for the corpus
  reassigned/tokenizer.json   a tokenizer.json whose added tokens declare ids HF reassigns on load (the converted
              Tekken vocabulary does the same at scale), with expected.json: HF's ids for the corpus

Usage: tokenizer_limits.py OUT_DIR   (run by ctest as the oracle_tokenizer_limits fixture)
"""
import base64
import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces and trailing  ",
    "line1\nline2\n\nline3",
    "Où est la bibliothèque ? Grüße, Привет, 你好, 👋🏽",
    "[INST] a question [/INST] an answer</s>",
    "numbers 12345 and 3.14159",
]
TRAIN = [
    "the quick brown fox jumps over the lazy dog " * 3,
    "hello world, hello there, world of words",
    "Où est la bibliothèque ? Grüße aus München, Привет мир",
    "numbers 12345 67890 3.14159 and more numbers",
] * 20
HUGE_ID = 400_000_000
NESTED_KINDS = {
    "normalizer": ("normalizers", {"type": "NFC"}),
    "pre_tokenizer": ("pretokenizers", {"type": "Digits", "individual_digits": True}),
    "decoder": ("decoders", {"type": "Fuse"}),
    "post_processor": ("processors", {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                                      "use_regex": True}),
}
TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                  r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level_bpe(vocab_size=400):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def record(tok, extra_ids=()):
    ids = [tok.encode(t, add_special_tokens=False).ids for t in CORPUS]
    return {"texts": CORPUS, "ids": ids, "decode": [tok.decode(i, skip_special_tokens=False) for i in ids],
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "pieces": {str(i): tok.id_to_token(i) for i in extra_ids}}


def sparse_ids(out_dir, base):
    data = json.loads(base.to_str())
    vocab = data["model"]["vocab"]
    last = max(vocab, key=vocab.get)  # the last merge's token: only merges name it, by its text
    vocab[last] = HUGE_ID
    d = os.path.join(out_dir, "sparse_ids")
    write_json(os.path.join(d, "tokenizer.json"), data)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    expected = record(tok, extra_ids=[HUGE_ID, HUGE_ID - 1, 0])
    expected["huge_id"] = HUGE_ID
    expected["huge_piece"] = last
    expected["huge_decode"] = tok.decode([HUGE_ID, 0, HUGE_ID - 1], skip_special_tokens=False)
    write_json(os.path.join(d, "expected.json"), expected)


def nested(out_dir, base):
    d = os.path.join(out_dir, "nested")
    good = json.loads(base.to_str())
    verdicts = {}
    for kind, (key, leaf) in NESTED_KINDS.items():
        for depth in (62, 63, 60000):
            # Python's json recurses too: the nesting is written as text, in place of a placeholder.
            node = f'{{"type": "Sequence", "{key}": [' * depth + json.dumps(leaf) + "]}" * depth
            data = dict(good)
            data[kind] = "@NESTED@"
            name = f"{kind}_{depth}.json"
            text = json.dumps(data).replace('"@NESTED@"', node)
            with open(os.path.join(d, name), "w", encoding="utf-8") as f:
                f.write(text)
            try:
                Tokenizer.from_str(text)
                verdicts[name] = "loads"
            except Exception as e:  # noqa: BLE001 -- any failure is the answer
                verdicts[name] = f"rejects: {e}"
    write_json(os.path.join(d, "hf.json"), verdicts)


def tekken(out_dir, base):
    """A tekken.json as mistral-common writes it: ranks of raw byte strings (the 256 bytes first), its regex, and the
    special tokens that take the first ids; then transformers' conversion of it."""
    from transformers.integrations.mistral import convert_tekken_tokenizer

    byte_decoder = {c: b for b, c in zip(range(256), [chr(x) for x in range(256)])}
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    byte_decoder = {v: k for k, v in bytes_to_unicode().items()}
    tokens = [bytes([b]) for b in range(256)]
    seen = set(tokens)
    for merged in sorted(base.get_vocab(), key=base.get_vocab().get):
        raw = bytes(byte_decoder[c] for c in merged)
        if raw not in seen:
            seen.add(raw)
            tokens.append(raw)
    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    num_special = 1000
    data = {
        "config": {"pattern": TEKKEN_PATTERN, "num_vocab_tokens": len(tokens), "default_vocab_size":
                   len(tokens) + num_special, "default_num_special_tokens": num_special, "version": "v7"},
        "vocab": [{"rank": r, "token_bytes": base64.b64encode(t).decode(), "token_str": t.decode("utf-8", "replace")}
                  for r, t in enumerate(tokens)],
        "special_tokens": [{"rank": r, "token_str": s, "is_control": True} for r, s in enumerate(specials)],
    }
    d = os.path.join(out_dir, "tekken")
    write_json(os.path.join(d, "tekken.json"), data)
    converted = convert_tekken_tokenizer(os.path.join(d, "tekken.json"), chat_template="")
    c = os.path.join(out_dir, "tekken_converted")
    converted.save_pretrained(c)
    tok = Tokenizer.from_file(os.path.join(c, "tokenizer.json"))
    write_json(os.path.join(c, "expected.json"), record(tok))


def reassigned(out_dir, base):
    """Added tokens declared at ids HF does not give them: it assigns new ones in file order from the vocabulary's
    size, and logs a warning for each."""
    data = json.loads(base.to_str())
    n = len(data["model"]["vocab"])
    data["added_tokens"] = [{"id": n + 100 + i, "content": f"<extra_{i}>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True} for i in range(50)]
    d = os.path.join(out_dir, "reassigned")
    write_json(os.path.join(d, "tokenizer.json"), data)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    expected = record(tok)
    expected["texts"] = CORPUS + ["<extra_0> and <extra_49>"]
    expected["ids"].append(tok.encode(expected["texts"][-1], add_special_tokens=False).ids)
    write_json(os.path.join(d, "expected.json"), expected)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(os.path.join(out_dir, "nested"), exist_ok=True)
    base = byte_level_bpe()
    sparse_ids(out_dir, base)
    nested(out_dir, base)
    tekken(out_dir, base)
    reassigned(out_dir, base)
    print(f"wrote the tokenizer limit cases to {out_dir}")


if __name__ == "__main__":
    main()
