"""What the simulated model answers: filler words, a JSON document, or one tool call.

The choice follows vLLM 0.32's OpenAI server for the deployment's parser flags, so agent traffic gets the
answers (and the 400s) it would get from the real engine:

- ``tool_choice`` other than ``none`` needs a tool parser, and vLLM builds one only when both
  ``--tool-call-parser`` and ``--enable-auto-tool-choice`` are set (``ParserManager.get_tool_parser``);
  without one, ``auto`` and ``required``/named choices are refused with vLLM's messages
  (``OnlineRenderer.render_chat`` in ``vllm/renderers/online_renderer.py``). A request with ``tools``
  and no ``tool_choice`` means ``auto`` (vLLM's request model sets it).
- With a parser: a named choice calls that function and finishes ``stop``; ``required`` calls the first
  tool and finishes ``tool_calls``; ``auto`` calls the first tool and finishes ``tool_calls`` unless
  the conversation's last message is a tool result, which it answers in text - so an agent loop against
  the simulator makes one tool round per user turn and then ends, instead of calling tools forever.
  ``message.content`` beside the call is ``""`` for named/required and ``null`` for auto, as vLLM
  returns it (``chat_completion_full_generator``).
- ``tool_choice: none``, or no tools: text. ``response_format`` ``json_object`` gets
  :data:`JSON_OBJECT_ANSWER`; ``json_schema`` (or ``structured_outputs.json``) an instance of the schema
  (:mod:`dsserve.sim.schema_instance`); ``structured_outputs.choice`` its first choice; anything else
  (plain text, ``regex``, ``grammar``, structural tags) filler words.

The arguments of a call are an instance of the tool's ``parameters`` schema, as ``json.dumps`` writes it.
This module decides *what* is said; :mod:`dsserve.sim.engine` decides how many tokens it takes and when
each arrives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsserve.sim.schema_instance import SchemaInstanceError, instance_of

__all__ = ["JSON_OBJECT_ANSWER", "Refusal", "TextAnswer", "ToolCallAnswer", "ToolParsing", "chat_answer", "text_answer"]

#: The answer to ``response_format: {"type": "json_object"}``: small, fixed, and a JSON object.
JSON_OBJECT_ANSWER = {"answer": "the model answers in simulated words"}


@dataclass(frozen=True)
class ToolParsing:
    """The deployment's vLLM flags that decide tool calling (``spec.model.frontend_kwargs()``)."""

    tool_call_parser: str | None = None
    enable_auto_tool_choice: bool = False

    @classmethod
    def from_frontend_kwargs(cls, kwargs: Mapping[str, Any]) -> ToolParsing:
        return cls(kwargs.get("tool_call_parser"), bool(kwargs.get("enable_auto_tool_choice")))

    @property
    def enabled(self) -> bool:
        """vLLM has a tool parser only with both flags; without it every tool_choice but none is refused."""
        return bool(self.tool_call_parser) and self.enable_auto_tool_choice


@dataclass(frozen=True)
class TextAnswer:
    """Content text; ``None`` means filler words until ``max_tokens`` (the model never samples EOS)."""

    text: str | None = None


@dataclass(frozen=True)
class ToolCallAnswer:
    """One call to ``name`` with ``arguments`` (JSON text), and how vLLM reports it."""

    name: str
    arguments: str
    finish_reason: str  # once the call is complete: "stop" for a named choice, else "tool_calls"
    content: str | None  # message.content beside the call: "" for named/required, None for auto


@dataclass(frozen=True)
class Refusal:
    """A request vLLM answers with a 400."""

    message: str
    param: str | None = None


def chat_answer(request: Any, parsing: ToolParsing) -> TextAnswer | ToolCallAnswer | Refusal:
    """What a chat request gets, given the deployment's tool parsing."""
    tools = [t for t in (getattr(request, "tools", None) or []) if getattr(t, "function", None) is not None]
    choice = getattr(request, "tool_choice", None)
    if not tools or choice in (None, "none"):
        return text_answer(request)
    if not parsing.enabled:
        return Refusal(_no_parser_message(choice))
    named = _named_function(choice)
    if named is not None:
        tool = next((t for t in tools if t.function.name == named), None)
        if tool is None:  # vLLM's request model refuses this before any engine sees it
            return Refusal(
                "The tool specified in `tool_choice` does not match any of the specified `tools`", "tool_choice"
            )
        return _call(tool, finish_reason="stop", content="")
    if choice == "required":
        return _call(tools[0], finish_reason="tool_calls", content="")
    if _last_role(getattr(request, "messages", None) or []) == "tool":
        return text_answer(request)
    return _call(tools[0], finish_reason="tool_calls", content=None)


def text_answer(request: Any) -> TextAnswer | Refusal:
    """Filler words, or the JSON / choice that response_format or structured_outputs asks for (chat without a
    tool call, and completions).

    ``response_format`` overrides ``structured_outputs`` as in vLLM's ``structured_outputs_from_response_format``.
    """
    fmt = getattr(request, "response_format", None)
    kind = getattr(fmt, "type", None)
    if kind == "json_schema":
        schema = getattr(getattr(fmt, "json_schema", None), "json_schema", None)
        return _json_text(schema, "response_format")
    if kind == "json_object":
        return TextAnswer(json.dumps(JSON_OBJECT_ANSWER))
    outputs = getattr(request, "structured_outputs", None)
    if outputs is None:
        return TextAnswer()
    if getattr(outputs, "json", None) is not None:
        return _json_text(outputs.json, "structured_outputs")
    if getattr(outputs, "json_object", None):
        return TextAnswer(json.dumps(JSON_OBJECT_ANSWER))
    if getattr(outputs, "choice", None):
        return TextAnswer(str(outputs.choice[0]))
    return TextAnswer()


def _json_text(schema: Any, param: str) -> TextAnswer | Refusal:
    try:
        if isinstance(schema, str):
            schema = json.loads(schema)
        return TextAnswer(json.dumps(instance_of(schema), ensure_ascii=False))
    except (SchemaInstanceError, ValueError) as exc:
        return Refusal(f"the simulated engine cannot build a value for this JSON schema: {exc}", param)


def _call(tool: Any, *, finish_reason: str, content: str | None) -> ToolCallAnswer | Refusal:
    """A call to ``tool`` whose arguments are an instance of its parameters schema."""
    fn = tool.function
    try:
        args = instance_of(getattr(fn, "parameters", None))
    except SchemaInstanceError as exc:
        return Refusal(f"the simulated engine cannot build arguments for tool {fn.name!r}: {exc}", "tools")
    return ToolCallAnswer(fn.name, json.dumps(args, ensure_ascii=False), finish_reason, content)


def _named_function(choice: Any) -> str | None:
    """The function a named tool_choice forces (``{"type": "function", "function": {"name": ...}}``)."""
    if isinstance(choice, Mapping):
        return (choice.get("function") or {}).get("name")
    return getattr(getattr(choice, "function", None), "name", None)


def _no_parser_message(choice: Any) -> str:
    """vLLM's 400 when no tool parser is configured (``OnlineRenderer.render_chat``)."""
    if choice == "auto":
        return '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    named = _named_function(choice)
    desc = f'function "{named}"' if named is not None else f'"{choice}"'
    return f"tool_choice={desc} requires --tool-call-parser to be set"


def _last_role(messages: list[Any]) -> str | None:
    if not messages:
        return None
    last = messages[-1]
    return last.get("role") if isinstance(last, Mapping) else getattr(last, "role", None)
