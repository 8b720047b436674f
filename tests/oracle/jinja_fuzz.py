#!/usr/bin/env python3
"""Oracle for the differential fuzz test: random expressions and small templates from a grammar, rendered by jinja2
in transformers' chat-template environment; OracleJinjaFuzz renders the same with qtune and requires the same text,
or an error of the same class. Deterministic for a seed (QTUNE_JINJA_FUZZ_SEED, default 20261207), bounded by
QTUNE_JINJA_FUZZ_CASES (default 3000); the C++ test prints the seed and the template of a failing case.

Usage: jinja_fuzz.py OUT_DIR
"""
import json
import os
import random
import re
import sys
import warnings

from transformers.utils import chat_template_utils as ctu

VARS = {"n": 7, "m": -3, "f": 2.5, "z": 0, "s": "Héllo World", "e": "", "w": "  pad me \n", "t": True,
        "l": [3, 1, 2], "ls": ["b", "A", "c"], "d": {"b": 2, "a": 1}, "msgs": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": " yo "}]}

FILTERS0 = ["upper", "lower", "trim", "length", "first", "last", "list", "sort", "unique", "reverse", "string",
            "int", "float", "abs", "capitalize", "title", "tojson", "round", "sum", "max", "min", "items", "count",
            "dictsort"]
TESTS = ["defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "sequence", "iterable",
         "boolean", "even", "odd", "true", "false", "lower", "upper"]
METHODS = [("s", "strip()"), ("s", "split()"), ("s", "upper()"), ("s", "lower()"), ("s", "title()"),
           ("w", "strip()"), ("w", "split(' ')"), ("s", "startswith('H')"), ("s", "endswith('d')"),
           ("s", "replace('l', 'L')"), ("s", "find('o')"), ("d", "get('a')"), ("d", "get('q', 9)"),
           ("d", "keys() | list"), ("d", "values() | list"), ("d", "items() | list"), ("l", "index(2)"),
           ("s", "count('l')"), ("ls", "count('b')"), ("s", "capitalize()"), ("w", "rstrip()"), ("w", "lstrip()")]
BINOPS = ["+", "-", "*", "/", "//", "%", "~", "==", "!=", "<", ">", "<=", ">=", "in", "not in", "and", "or"]


def literal(r):
    k = r.randrange(9)
    if k == 0:
        return str(r.randrange(-20, 21))
    if k == 1:
        return r.choice(["0.5", "1.25", "-3.0", "1e3", "0.1", "2.0", "1e-5", "123.456"])
    if k == 2:
        return r.choice(["'a'", "'xyz'", "''", "'ü'", "\"q'q\"", "' sp '", "'10'", "'3.5'", "'A b-c'"])
    if k == 3:
        return r.choice(["true", "false", "none"])
    if k == 4:
        return "[" + ", ".join(literal(r) for _ in range(r.randrange(4))) + "]"
    if k == 5:
        return "{" + ", ".join(f"'{c}': {literal(r)}" for c in "kvw"[:r.randrange(3)]) + "}"
    if k == 6:
        return "(" + ", ".join(literal(r) for _ in range(1 + r.randrange(2))) + ",)"
    return r.choice(list(VARS) + ["undef"])


def expr(r, depth):
    if depth <= 0:
        return literal(r)
    k = r.randrange(10)
    if k < 3:
        return f"({expr(r, depth - 1)} {r.choice(BINOPS)} {expr(r, depth - 1)})"
    if k == 3:
        return f"({expr(r, depth - 1)} | {r.choice(FILTERS0)})"
    if k == 4:
        neg = r.choice(["", "not "])
        return f"({expr(r, depth - 1)} is {neg}{r.choice(TESTS)})"
    if k == 5:
        v, m = r.choice(METHODS)
        return f"({v}.{m})"
    if k == 6:
        return f"({expr(r, depth - 1)} if {expr(r, depth - 1)} else {expr(r, depth - 1)})"
    if k == 7:
        index = r.choice(['0', '-1', '1:', '::-1', ':2', "'a'", '5'])
        return f"({expr(r, depth - 1)})[{index}]"
    if k == 8:
        return r.choice([f"(not {expr(r, depth - 1)})", f"(-{expr(r, depth - 1)})",
                         f"({expr(r, depth - 1)} | default({literal(r)}))",
                         f"({expr(r, depth - 1)} | join('-'))", f"({expr(r, depth - 1)} | replace('a', 'b'))",
                         f"(msgs | map(attribute='role') | join(','))",
                         f"(msgs | selectattr('role', 'equalto', {literal(r)}) | list | length)",
                         f"({expr(r, depth - 1)} | tojson(indent=1))", f"(range({r.randrange(-2, 6)}) | list)"])
    return literal(r)


def template(r):
    k = r.randrange(4)
    e = expr(r, 1 + r.randrange(3))
    if k == 0:
        return "{{ " + e + " }}"
    if k == 1:
        return "{% if " + e + " %}yes{% else %}no{% endif %}"
    if k == 2:
        return "{% for x in " + e + " %}[{{ x }}{{ loop.index }}]{% else %}empty{% endfor %}"
    return "{% set ns = namespace(v=" + e + ") %}{{ ns.v }}|{{ " + expr(r, 1) + " }}"


def main():
    # jinja2 compiles a subscript of a literal to Python code that Python warns about; the render is what counts.
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seed = int(os.environ.get("QTUNE_JINJA_FUZZ_SEED", "20261207"))
    count = int(os.environ.get("QTUNE_JINJA_FUZZ_CASES", "3000"))
    r = random.Random(seed)
    cases = []
    for _ in range(count):
        text = template(r)
        case = {"template": text}
        try:
            case["text"] = ctu._compile_jinja_template(text).render(**VARS)
            if re.search(r" 0x[0-9a-f]{6,}", case["text"]):
                continue  # a generator or method printed with its address: nothing to compare
        except Exception as e:  # noqa: BLE001
            case["error"] = {"type": type(e).__name__, "message": str(e)}
        cases.append(case)
    with open(os.path.join(out, "fuzz.json"), "w", encoding="utf-8") as f:
        json.dump({"seed": seed, "vars": VARS, "cases": cases}, f, ensure_ascii=False)
    print(f"jinja fuzz: {count} cases, seed {seed}")


if __name__ == "__main__":
    main()
