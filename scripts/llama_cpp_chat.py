#!/usr/bin/env python3
"""Asks a GGUF model one question through llama.cpp (llama-cpp-python from .venv), with the chat template the file
carries and greedy decoding: what a user of llama.cpp or Ollama sees of a model qtune exported.

Usage: llama_cpp_chat.py MODEL.gguf "question" [--lora ADAPTER.gguf] [-n 48]
"""
import argparse

import llama_cpp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("question")
    p.add_argument("--lora")
    p.add_argument("-n", type=int, default=48)
    a = p.parse_args()
    llm = llama_cpp.Llama(model_path=a.model, lora_path=a.lora, n_ctx=512, n_threads=2, verbose=False, seed=0)
    out = llm.create_chat_completion([{"role": "user", "content": a.question}], max_tokens=a.n, temperature=0.0,
                                     top_k=1)
    print(out["choices"][0]["message"]["content"].strip())


if __name__ == "__main__":
    main()
