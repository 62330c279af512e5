"""Caps on the grammars a request asks the engine to compile: tool schemas, response formats, regexes.

vLLM compiles a request's JSON schema, grammar or structural tag into an xgrammar matcher with no time
limit (only regexes have one: vllm/v1/structured_output/backend_xgrammar.py ``compile_grammar``;
vllm-project/vllm#54003), first in the API process (``validate_xgrammar_grammar``, on the replica's event
loop) and again in the engine core. Compile time grows faster than the schema: measured here with
xgrammar on the tiny model's tokenizer (bench/grammar_compile.py), a nested ``oneOf`` of 56 KB takes 0.13 s,
of 225 KB 1.6 s and of 901 KB 30 s, and a 43-byte ``pattern`` ``^(a|b){3000}$`` 0.9 s. Bounding the size,
the nesting and the repetition counts of what a request sends bounds that work; these checks run before
admission, on the parsed body, without compiling anything.

What counts as one grammar: each tool's ``function.parameters``, the whole ``response_format``, and the
whole ``structured_outputs`` (vLLM's own field: json, regex, grammar, choice, structural_tag).

Only the standard library is used: the module is part of the body checks the Python 3.12 suite imports.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from dsserve.serving.errors import InvalidRequest

__all__ = ["GrammarLimits", "MAX_PATTERN_REPEAT", "check_grammars", "name_grammar_field", "nests_deeper_than"]

#: The most repetitions all regex quantifiers of one request may add up to (``{n}``, ``{n,m}``, ``{n,}``; the
#: larger bound counts). Real patterns use a handful (``^\\d{4}-\\d{2}-\\d{2}$`` is 8); ``{3000}`` costs a second.
MAX_PATTERN_REPEAT = 1000

_QUANTIFIER = re.compile(r"(?<!\\)\{(\d{1,9})(?:,(\d{0,9}))?\}")


class GrammarLimits(Protocol):
    """The ``api.*`` caps on grammars (body.ShapeLimits carries them): tools per request, bytes and nesting
    of each grammar."""

    max_tools: int
    max_schema_bytes: int
    max_schema_depth: int


def nests_deeper_than(data: Any, limit: int) -> bool:
    """Whether arrays/objects in ``data`` nest more than ``limit`` deep (iterative: Python 3.12's ``json``
    parses nesting deeper than the interpreter's recursion limit). The body's own cap uses it too (body.py)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _regexes(node: Any, *, top_regex: bool) -> list[str]:
    """Every regex in a grammar: values of ``pattern`` keys (and ``patternProperties`` keys), and a
    top-level ``regex`` (structured_outputs.regex)."""
    found: list[str] = []
    if top_regex and isinstance(node, dict) and isinstance(node.get("regex"), str):
        found.append(node["regex"])
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            pattern = item.get("pattern")
            if isinstance(pattern, str):
                found.append(pattern)
            props = item.get("patternProperties")
            if isinstance(props, dict):
                found.extend(k for k in props if isinstance(k, str))
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
    return found


def _repeats(pattern: str) -> int:
    total = 0
    for low, high in _QUANTIFIER.findall(pattern):
        total += max(int(low), int(high) if high else 0)
    return total


def _check_one(grammar: Any, where: str, limits: GrammarLimits, *, top_regex: bool = False) -> int:
    """400 when one grammar is too large or too deep; returns its regex repetitions."""
    if isinstance(grammar, str):  # a grammar or schema sent as a string
        size = len(grammar.encode("utf-8", "surrogatepass"))
    else:
        size = len(json.dumps(grammar, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > limits.max_schema_bytes:
        raise InvalidRequest(
            f"Invalid request: {where}: the schema/grammar is {size} bytes, more than "
            f"{limits.max_schema_bytes} (api.max_schema_bytes); the engine compiles it with no "
            "time limit. Send a smaller schema, e.g. with $defs/$ref for repeated parts.",
            param=where,
        )
    if nests_deeper_than(grammar, limits.max_schema_depth):
        raise InvalidRequest(
            f"Invalid request: {where}: the schema nests objects/arrays more than "
            f"{limits.max_schema_depth} levels deep (api.max_schema_depth); flatten it.",
            param=where,
        )
    return sum(_repeats(p) for p in _regexes(grammar, top_regex=top_regex))


def check_grammars(data: dict[str, Any], limits: GrammarLimits) -> None:
    """400 naming the field and the ``api.*`` limit a request's tools or output grammar goes past."""
    repeats = 0
    tools = data.get("tools")
    if isinstance(tools, list):
        if len(tools) > limits.max_tools:
            raise InvalidRequest(
                f"Invalid request: tools: at most {limits.max_tools} tools per request "
                f"(api.max_tools), got {len(tools)}.",
                param="tools",
            )
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            params = function.get("parameters") if isinstance(function, dict) else None
            if params is not None:
                repeats += _check_one(params, f"tools.{i}.function.parameters", limits)
    for field in ("response_format", "structured_outputs"):
        grammar = data.get(field)
        if isinstance(grammar, (dict, str)):
            repeats += _check_one(grammar, field, limits, top_regex=field == "structured_outputs")
    if repeats > MAX_PATTERN_REPEAT:
        raise InvalidRequest(
            f"Invalid request: the regex quantifiers in this request's schemas repeat "
            f"{repeats} times in all, more than {MAX_PATTERN_REPEAT}; each counted repetition "
            "adds grammar states the engine compiles. Use smaller {n,m} bounds (maxLength "
            "bounds a string's length at no such cost).",
            param="pattern",
        )


_GRAMMAR_FIELDS = ("response_format", "structured_outputs", "tools")
_GRAMMAR_ERROR = re.compile(r"grammar|json schema|structural tag|regex", re.IGNORECASE)


def name_grammar_field(body: bytes, data: dict[str, Any]) -> bytes:
    """vLLM's 400 for a schema xgrammar cannot compile ("Failed to transform json schema into a grammar: ...")
    names no field; name the one the request sent its grammar in."""
    try:
        doc = json.loads(body)
        err = doc["error"]
    except (ValueError, KeyError, TypeError):
        return body
    if not isinstance(err, dict) or err.get("param") or not _GRAMMAR_ERROR.search(str(err.get("message", ""))):
        return body
    field = next((f for f in _GRAMMAR_FIELDS if data.get(f)), None)
    if field is None:
        return body
    err["param"] = field
    return json.dumps(doc, separators=(",", ":")).encode()
