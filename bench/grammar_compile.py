"""Grammar compile time: what a request's JSON schema or regex costs xgrammar, the engine's grammar backend.

vLLM compiles a request's schema with no time limit (vllm-project/vllm#54003): once on the replica's event
loop (``xgr.Grammar.from_json_schema`` in ``validate_xgrammar_grammar``) and again in the engine core
(``GrammarCompiler.compile_grammar`` against the tokenizer). This script times both steps, as vLLM runs
them, on the tiny model's tokenizer for two shapes: a nested ``oneOf`` in which each level holds the level
below twice (schema and grammar double per level) and a string ``pattern`` with a large repetition count.
The figures are what ``api.max_schema_bytes``, ``api.max_schema_depth`` and the regex repetition budget
(dsserve/serving/grammar_limits.py) are sized against; docs/agents.md quotes them.

    python -m bench.grammar_compile [--levels 10 12 14] [--repeats 1000 3000] [--out FILE]

This is a benchmark, not a test: it prints a table and writes JSON (bench/results/grammar-compile.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import REPO
from bench.openloop import machine


def nested_one_of(levels: int) -> dict[str, Any]:
    """The shape of vllm-project/vllm#54003: each level a oneOf holding the level below twice."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"oneOf": [schema, {"type": "array", "items": schema}]}
    return schema


def repeated_pattern(count: int) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^(a|b){{{count}}}$"}


def time_schema(compiler: Any, schema: dict[str, Any]) -> dict[str, Any]:
    import xgrammar as xgr

    t0 = time.perf_counter()
    grammar = xgr.Grammar.from_json_schema(schema)
    t1 = time.perf_counter()
    compiler.compile_grammar(grammar)
    t2 = time.perf_counter()
    return {
        "schema_bytes": len(json.dumps(schema, separators=(",", ":"))),
        "convert_s": round(t1 - t0, 3),
        "compile_s": round(t2 - t1, 3),
        "total_s": round(t2 - t0, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--levels", type=int, nargs="+", default=[10, 12, 14], help="nested oneOf depths")
    ap.add_argument("--repeats", type=int, nargs="+", default=[1000, 3000], help="pattern repetition counts")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grammar-compile.json")
    args = ap.parse_args(argv)

    import xgrammar as xgr
    from transformers import AutoTokenizer

    from dsserve.tiny_models import build_tiny_model

    path, _ = build_tiny_model("tiny-deepseek-v2")
    tok = AutoTokenizer.from_pretrained(path)
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok)), cache_enabled=False)
    rows: list[dict[str, Any]] = []
    for levels in args.levels:
        rows.append({"shape": f"nested oneOf, {levels} levels", **time_schema(compiler, nested_one_of(levels))})
        print(rows[-1], flush=True)
    for count in args.repeats:
        rows.append({"shape": f"pattern ^(a|b){{{count}}}$", **time_schema(compiler, repeated_pattern(count))})
        print(rows[-1], flush=True)

    print(f"\n{'shape':32} {'bytes':>9} {'convert s':>10} {'compile s':>10} {'total s':>8}")
    for r in rows:
        print(f"{r['shape']:32} {r['schema_bytes']:>9,} {r['convert_s']:>10} {r['compile_s']:>10} {r['total_s']:>8}")
    report = {
        "what": "xgrammar JSON-schema convert + compile time, one core, tiny-deepseek-v2 tokenizer",
        "xgrammar": getattr(xgr, "__version__", None) or _version("xgrammar"),
        "machine": machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
