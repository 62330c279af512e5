"""Names the installed vLLM accepts: engine and frontend arguments, tool-call and reasoning parsers.

Read from vLLM's source files with ``ast`` rather than imported: importing vLLM takes seconds, and
`dsserve validate` should not. Each function returns None when vLLM is not installed here (a GPU spec
validated on a laptop): the check is then skipped, and ray.serve.llm or vLLM refuses a wrong name again on
the cluster. ``tests/unit/test_vllm_names.py`` checks every reader against vLLM's own objects.

Where each comes from (vLLM 0.32):

- engine arguments: the annotated fields of ``EngineArgs``/``AsyncEngineArgs`` in ``vllm/engine/arg_utils.py``;
- frontend arguments: the annotated fields of ``FrontendArgs`` and ``BaseFrontendArgs`` in
  ``vllm/entrypoints/launchers/cli_args.py``. Ray 2.60 takes both kinds in ``engine_kwargs`` and splits
  them by those dataclasses (``VLLMEngineConfig.from_llm_config`` in
  ``ray/llm/_internal/serve/engines/vllm/vllm_models.py``);
- tool-call parsers: the keys of ``_TOOL_PARSERS_TO_REGISTER`` in ``vllm/tool_parsers/__init__.py``;
- reasoning parsers: the keys of ``_REASONING_PARSERS_TO_REGISTER`` in ``vllm/reasoning/__init__.py``;
- KV connectors (prefill/decode disaggregation): the first argument of each
  ``KVConnectorFactory.register_connector(...)`` call in ``vllm/distributed/kv_transfer/kv_connector/factory.py``.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from functools import lru_cache
from pathlib import Path

__all__ = [
    "did_you_mean",
    "engine_arg_names",
    "frontend_arg_names",
    "kv_connector_names",
    "reasoning_parser_names",
    "tool_parser_names",
]


def _vllm_root() -> Path | None:
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _tree(relative: str) -> ast.Module | None:
    root = _vllm_root()
    if root is None:
        return None
    try:
        return ast.parse((root / relative).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None


def _class_fields(relative: str, classes: tuple[str, ...]) -> frozenset[str] | None:
    tree = _tree(relative)
    if tree is None:
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
    return frozenset(names) or None


def _dict_keys(relative: str, variable: str) -> frozenset[str] | None:
    tree = _tree(relative)
    if tree is None:
        return None
    for node in tree.body:
        value: ast.expr | None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == variable and isinstance(value, ast.Dict):
            keys = {k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            return frozenset(keys) or None
    return None


@lru_cache(maxsize=1)
def engine_arg_names() -> frozenset[str] | None:
    return _class_fields("engine/arg_utils.py", ("EngineArgs", "AsyncEngineArgs"))


@lru_cache(maxsize=1)
def frontend_arg_names() -> frozenset[str] | None:
    return _class_fields("entrypoints/launchers/cli_args.py", ("FrontendArgs", "BaseFrontendArgs"))


@lru_cache(maxsize=1)
def tool_parser_names() -> frozenset[str] | None:
    return _dict_keys("tool_parsers/__init__.py", "_TOOL_PARSERS_TO_REGISTER")


@lru_cache(maxsize=1)
def reasoning_parser_names() -> frozenset[str] | None:
    return _dict_keys("reasoning/__init__.py", "_REASONING_PARSERS_TO_REGISTER")


@lru_cache(maxsize=1)
def kv_connector_names() -> frozenset[str] | None:
    tree = _tree("distributed/kv_transfer/kv_connector/factory.py")
    if tree is None:
        return None
    names = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "register_connector"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }
    return frozenset(names) or None


def did_you_mean(name: str, names: frozenset[str] | set[str], n: int = 3) -> str:
    """``"did you mean 'a', 'b'? "`` with the few names most like ``name``, best first; empty if none is close."""
    near = difflib.get_close_matches(name, sorted(names), n=n, cutoff=0.5)
    return f"did you mean {', '.join(repr(x) for x in near)}? " if near else ""
