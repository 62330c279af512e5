"""Tool calls and JSON answers: the built-in tool sets, and the check that an answer is well-formed.

Agent frameworks send OpenAI ``tools`` with a ``tool_choice`` and sometimes a ``response_format`` of type
``json_schema``, then parse what comes back; a call they cannot parse breaks the agent's turn as surely as
an HTTP 500 does. So a load test of agent traffic checks every answer the way an agent reads it, and a
malformed answer is a failed request (it counts in the SLO gate's error ratio):

- ``tool_choice: required`` or a named function: the answer must carry ``tool_calls``; each call needs an
  ``id`` (the agent answers the call by it), a ``function.name`` among the declared tools (the named one,
  for a named choice), and ``function.arguments`` that parse as JSON and validate against that tool's
  ``parameters`` schema. Otherwise the error is ``malformed_tool_call: ...``.
- ``tool_choice: auto`` (or tools without a choice, which servers read as auto): plain text is fine, but a
  call, when present, must be well-formed as above.
- ``tool_choice: none``: a call is itself malformed (the agent did not offer one).
- ``response_format`` ``json_schema`` (``json_object``): the answer's ``content`` must parse as JSON and
  validate against the schema (be an object). Otherwise ``malformed_json: ...``.

``finish_reason`` is not checked: OpenAI and vLLM answer ``"tool_calls"`` for required and auto calls and
``"stop"`` for a named choice. It only explains a failure: arguments cut off at ``max_tokens`` end with
``"length"``, and the error says so.

Streamed answers are assembled as the OpenAI SDK does: ``delta.tool_calls`` entries are grouped by
``index``, the ``id`` and ``function.name`` come from the first delta that carries them, and the
``function.arguments`` fragments are concatenated in order (:class:`AnswerBuffer`).

The built-in tool sets (:data:`TOOL_SETS`) keep their schemas bounded (enums, bounded integers, strings
with ``maxLength`` or a length-bounded printable ``pattern``, never both, no extra properties): a
guided-decoding engine then always finishes the JSON, even the random-weight tiny model, whose sampling
would otherwise wander through an unbounded string forever.

``jsonschema`` (a dependency of Ray, so always installed with dsserve) is imported on first use, not at
import time: the CLI imports this module through the scenario schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

    from dsserve.loadgen.scenario import RequestClass

__all__ = [
    "TOOL_SETS",
    "AnswerBuffer",
    "AnswerCheck",
    "ToolCall",
    "schema_problem",
    "tool_calls_from_message",
]

#: Error kinds (the text before the first colon, which the gate groups errors by).
MALFORMED_TOOL_CALL = "malformed_tool_call"
MALFORMED_JSON = "malformed_json"
#: Longest error text kept per request (requests.csv and Locust's failure table stay readable).
_MAX_ERROR_CHARS = 300

_CITIES = ["Beijing", "Shanghai", "Hangzhou", "Shenzhen", "Singapore", "London", "Paris", "New York"]

#: Built-in tool sets a request class can name (``tools: agent-basic``) instead of listing definitions.
TOOL_SETS: dict[str, list[dict[str, Any]]] = {
    # What a retrieval agent offers: one call that looks something up, one that searches documents.
    "agent-basic": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "enum": _CITIES, "description": "The city."},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    },
                    "required": ["city", "unit"],
                    "additionalProperties": False,
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "search_docs",
                "description": "Search the documentation; returns the best matching passages.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        # printable text only: the xgrammar vLLM 0.32 installs lets a JSON string hold raw control
                        # characters, which no JSON parser accepts (docs/agents.md). The pattern bounds the length
                        # too: vLLM refuses a string with both a pattern and maxLength (xgrammar cannot hold both,
                        # has_xgrammar_unsupported_json_features in vllm/v1/structured_output/backend_xgrammar.py).
                        "query": {"type": "string", "pattern": "^[ -~]{1,64}$", "description": "What to find."},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 10},
                    },
                    "required": ["query", "top_k"],
                    "additionalProperties": False,
                },
            },
        },
    ],
}


def schema_problem(schema: dict[str, Any]) -> tuple[str, Any, str] | None:
    """Where ``schema`` breaks JSON Schema (draft 2020-12), or None: checked when a scenario loads.

    Returns (path inside the schema, e.g. ``.properties.city.type`` or ``""`` for its top, the bad value,
    what is wrong), so the scenario error can name the exact YAML path.
    """
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return exc.json_path[1:], exc.instance, f"not valid JSON Schema: {exc.message}"[:_MAX_ERROR_CHARS]
    return None


def _validator(schema: dict[str, Any]) -> Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema)


@dataclass(slots=True)
class ToolCall:
    """One tool call as an agent reads it (``arguments`` is the raw JSON text)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


def tool_calls_from_message(message: Any) -> list[ToolCall] | str:
    """The tool calls of a non-streamed ``choices[0].message``, or the reason they cannot be read."""
    if not isinstance(message, dict):
        return f"{MALFORMED_TOOL_CALL}: the choice has no message object"
    raw = message.get("tool_calls")
    if raw is None:
        return []
    if not isinstance(raw, list):
        return f"{MALFORMED_TOOL_CALL}: message.tool_calls is not a list"
    calls = []
    for i, item in enumerate(raw):
        fn = item.get("function") if isinstance(item, dict) else None
        if not isinstance(fn, dict):
            return f"{MALFORMED_TOOL_CALL}: tool call {i} has no function object"
        calls.append(ToolCall(i, _str(item.get("id")), _str(fn.get("name")), _raw_arguments(fn.get("arguments"))))
    return calls


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _raw_arguments(v: Any) -> str | None:
    # OpenAI sends arguments as a JSON *string*; an object in its place is a server bug an SDK rejects
    return v if isinstance(v, str) else (None if v is None else json.dumps(v))


@dataclass(slots=True)
class AnswerBuffer:
    """What a stream says, assembled: ``content`` fragments and tool calls by index, as the OpenAI SDK does.

    Fed one ``choices[i]`` object per event by :class:`~dsserve.loadgen.measure.StreamState`, only for
    request classes that check their answers (plain chat does not pay for it).
    """

    content: list[str] = field(default_factory=list)
    calls: dict[int, ToolCall] = field(default_factory=dict)
    problem: str | None = None

    def feed(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        text = delta.get("content")
        if isinstance(text, str) and text:
            self.content.append(text)
        deltas = delta.get("tool_calls")
        if deltas:
            self._feed_calls(deltas)

    def _feed_calls(self, deltas: Any) -> None:
        if not isinstance(deltas, list):
            self.problem = self.problem or f"{MALFORMED_TOOL_CALL}: delta.tool_calls is not a list"
            return
        for d in deltas:
            index = d.get("index") if isinstance(d, dict) else None
            if not isinstance(index, int) or isinstance(index, bool):
                # the SDK cannot tell which call a fragment continues without its index
                self.problem = self.problem or f"{MALFORMED_TOOL_CALL}: a delta.tool_calls entry has no index"
                continue
            call = self.calls.setdefault(index, ToolCall(index))
            call.id = call.id or _str(d.get("id"))
            fn = d.get("function")
            if isinstance(fn, dict):
                call.name = call.name or _str(fn.get("name"))
                part = fn.get("arguments")
                if isinstance(part, str) and part:
                    call.arguments = (call.arguments or "") + part

    def tool_calls(self) -> list[ToolCall]:
        return [self.calls[i] for i in sorted(self.calls)]

    def text(self) -> str:
        return "".join(self.content)


@dataclass(frozen=True)
class AnswerCheck:
    """What a well-formed answer of one request class carries; built once per class, used per request.

    ``tool_choice`` is ``""`` when the class declares no tools, else ``auto``, ``required``, ``none`` or
    ``named`` (then ``named`` holds the function name). ``json_mode`` is ``json_schema``, ``json_object``
    or ``None``.
    """

    tool_choice: str = ""
    named: str | None = None
    tools: Mapping[str, Validator] = field(default_factory=dict)
    json_mode: str | None = None
    json_name: str | None = None
    json_validator: Validator | None = None

    @classmethod
    def for_class(cls, rc: RequestClass) -> AnswerCheck | None:
        """The check for a request class, or None when its answers need none (plain chat, completions)."""
        if not rc.checks_answer:
            return None
        choice, named = _choice_mode(rc.tool_choice, bool(rc.tools))
        tools = {t.function.name: _validator(t.function.parameters) for t in rc.tools or ()}
        fmt = rc.response_format
        js = fmt.json_schema if fmt is not None else None
        return cls(
            tool_choice=choice,
            named=named,
            tools=tools,
            json_mode=fmt.type if fmt else None,
            json_name=js.name if js else None,
            json_validator=_validator(js.schema_) if js is not None else None,
        )

    def check_message(self, message: Any, finish_reason: str | None) -> str | None:
        """A non-streamed answer (``choices[0].message``): None when well-formed, else the error."""
        calls = tool_calls_from_message(message)
        if isinstance(calls, str):
            return calls
        content = message.get("content") if isinstance(message, dict) else None
        return self.check(content if isinstance(content, str) else None, calls, finish_reason)

    def check_stream(self, buf: AnswerBuffer, finish_reason: str | None) -> str | None:
        """A streamed answer, assembled: None when well-formed, else the error."""
        if buf.problem:
            return buf.problem
        return self.check(buf.text(), buf.tool_calls(), finish_reason)

    def check(self, content: str | None, calls: list[ToolCall], finish_reason: str | None) -> str | None:
        """None when an agent can use the answer, else ``malformed_tool_call: ...`` or ``malformed_json: ...``."""
        problem = self._check_calls(calls, finish_reason)
        if problem is None and self.json_mode is not None and not calls:
            problem = self._check_json(content, finish_reason)
        return problem[:_MAX_ERROR_CHARS] if problem else None

    def _check_calls(self, calls: list[ToolCall], finish_reason: str | None) -> str | None:
        if self.tool_choice in ("required", "named") and not calls:
            return (
                f"{MALFORMED_TOOL_CALL}: no tool call in the answer (tool_choice {self._choice_text()})"
                f"{_length_hint(finish_reason)}"
            )
        if self.tool_choice == "none" and calls:
            return f"{MALFORMED_TOOL_CALL}: the answer calls {calls[0].name!r} although tool_choice is none"
        for position, call in enumerate(calls):
            problem = self._check_call(position, call, finish_reason)
            if problem:
                return f"{MALFORMED_TOOL_CALL}: {problem}"
        return None

    def _check_call(self, position: int, call: ToolCall, finish_reason: str | None) -> str | None:
        who = f"tool call {position}"
        if call.name is None:
            return f"{who} has no function.name"
        if call.name not in self.tools:
            return f"{who} names {call.name!r}, not a declared tool ({', '.join(self.tools)})"
        if self.named is not None and call.name != self.named:
            return f"{who} calls {call.name!r}, but tool_choice names {self.named!r}"
        who = f"{who} ({call.name})"
        if call.id is None:
            return f"{who} has no id (the agent answers a call by its id)"
        args, why = _parse_json(call.arguments)
        if why:
            return f"{who} arguments are not JSON: {why}{_length_hint(finish_reason)}"
        bad = _first_violation(self.tools[call.name], args)
        return f"{who} arguments do not match its parameters: {bad}" if bad else None

    def _check_json(self, content: str | None, finish_reason: str | None) -> str | None:
        value, why = _parse_json(content)
        if why:
            return f"{MALFORMED_JSON}: the answer is not JSON: {why}{_length_hint(finish_reason)}"
        if self.json_validator is None:  # json_object
            return None if isinstance(value, dict) else f"{MALFORMED_JSON}: the answer is not a JSON object"
        bad = _first_violation(self.json_validator, value)
        return f"{MALFORMED_JSON}: the answer does not match json_schema {self.json_name!r}: {bad}" if bad else None

    def _choice_text(self) -> str:
        return f"names {self.named!r}" if self.named else self.tool_choice


def _choice_mode(tool_choice: Any, has_tools: bool) -> tuple[str, str | None]:
    """(mode, function name) of a validated tool_choice; tools without a choice mean auto, as servers read it."""
    if not has_tools:
        return "", None
    if isinstance(tool_choice, dict):
        return "named", tool_choice["function"]["name"]
    return (tool_choice or "auto"), None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; JSON has neither


def _parse_json(text: str | None) -> tuple[Any, str | None]:
    """(value, None), or (None, why) when ``text`` is missing or not JSON."""
    if not text or not text.strip():
        return None, "empty"
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except ValueError as exc:
        return None, f"{exc} in {_clip(text)}"


def _first_violation(validator: Validator, value: Any) -> str | None:
    """The most relevant schema violation (jsonschema's best match), with where it is; None when valid."""
    from jsonschema.exceptions import best_match

    err = best_match(validator.iter_errors(value))
    if err is None:
        return None
    return f"{err.message} at {err.json_path}"


def _length_hint(finish_reason: str | None) -> str:
    return " (finish_reason length: cut off at max_tokens; raise output_tokens)" if finish_reason == "length" else ""


def _clip(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")
