"""Load-test scenarios: one YAML file describes the load, the requests and the SLO gate.

Shipped scenarios live in ``loadtest/scenarios/*.yaml``; `dsserve loadtest NAME` finds them by name, and
any other path works too. Validation happens once, here: unknown keys are errors, values are not coerced
from strings, and every problem becomes one line naming the YAML path, the bad value and the fix.
docs/loadtesting.md documents every field.

Sections:

- ``load``: the open-loop arrival process (target rate for all generator processes together, constant or
  Poisson arrivals, ramp-up, duration or rate stages, in-flight cap, timeouts, seed).
- ``workload``: where prompts come from (synthetic with token lengths measured by a tokenizer, or a
  ShareGPT file) and the request mix: each entry is a weighted request class (chat or completions,
  streamed or not, prompt and output token-length distributions, model id; for agent traffic, OpenAI
  ``tools`` with a ``tool_choice`` and a ``response_format``, whose answers are then checked, see
  :mod:`dsserve.loadgen.tools`).
- ``slo``: the gate (percentile thresholds, error ratio, the share of the target rate that must arrive).
- ``generator``: when the load generator itself is too slow for its measurements to count.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsserve.loadgen.errors import ScenarioError
from dsserve.loadgen.tools import TOOL_SETS, schema_problem
from dsserve.overrides import apply_overrides as _apply_overrides
from dsserve.validation import PathError, describe_errors

__all__ = [
    "Dist",
    "FunctionSpec",
    "GeneratorSpec",
    "JsonSchemaSpec",
    "LoadSpec",
    "PromptSpec",
    "RequestClass",
    "ResponseFormat",
    "Scenario",
    "SloGate",
    "StageSpec",
    "Threshold",
    "ToolSpec",
    "WorkloadSpec",
    "SCENARIO_DIR",
    "apply_overrides",
    "find_scenario",
    "load_scenario",
    "parse_scenario",
    "shipped_scenarios",
]

#: Where the shipped scenarios live (the repository's loadtest/scenarios).
SCENARIO_DIR = Path(__file__).resolve().parent.parent.parent / "loadtest" / "scenarios"

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
#: OpenAI's rule for function and json_schema names.
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOOL_CHOICES = ("auto", "required", "none")
_NAMED_CHOICE = "{type: function, function: {name: get_weather}}"


class _Strict(BaseModel):
    """Unknown keys are errors and strings are not read as numbers: a typo must not change the load."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_PathError = PathError  # cross-field errors name their own YAML path (dsserve/validation.py)


class Dist(_Strict):
    """A token-length distribution. A bare number in YAML means ``{dist: constant, value: N}``.

    ``unit: context`` makes every length a fraction of ``workload.context_window``, so one scenario can
    target a 32K-token model and the tiny 2K-token one by overriding a single number.
    """

    dist: Literal["constant", "uniform", "normal", "lognormal", "exponential", "dataset"] = Field(
        description="constant (value), uniform (min..max), normal/lognormal (mean, stdev; clamped to "
        "min..max), exponential (mean), dataset (the ShareGPT reply lengths; output_tokens only)."
    )
    value: float | None = Field(None, gt=0, description="The length, for dist: constant.")
    mean: float | None = Field(None, gt=0, description="Mean length (normal, lognormal, exponential).")
    stdev: float | None = Field(None, ge=0, description="Standard deviation (normal, lognormal).")
    min: float | None = Field(None, gt=0, description="Lower bound (uniform; clamp for the others).")
    max: float | None = Field(None, gt=0, description="Upper bound (uniform; clamp for the others).")
    unit: Literal["tokens", "context"] = Field(
        "tokens", description="tokens, or context: fractions of workload.context_window."
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, data: Any) -> Any:
        if isinstance(data, bool):
            return data
        if isinstance(data, (int, float)):
            return {"dist": "constant", "value": data}
        return data

    @model_validator(mode="after")
    def _parameters(self) -> Dist:
        need = {
            "constant": ("value",),
            "uniform": ("min", "max"),
            "normal": ("mean", "stdev"),
            "lognormal": ("mean", "stdev"),
            "exponential": ("mean",),
            "dataset": (),
        }[self.dist]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(
                f"dist {self.dist} needs {' and '.join(missing)}; e.g. "
                + {
                    "constant": "{dist: constant, value: 128}",
                    "uniform": "{dist: uniform, min: 64, max: 256}",
                    "normal": "{dist: normal, mean: 128, stdev: 32}",
                    "lognormal": "{dist: lognormal, mean: 512, stdev: 256}",
                    "exponential": "{dist: exponential, mean: 128}",
                }[self.dist]
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g}); swap them")
        if self.unit == "context":
            for key in ("value", "mean", "min", "max"):
                v = getattr(self, key)
                if v is not None and v > 1:
                    raise ValueError(
                        f"with unit: context, {key} is a fraction of the context window "
                        f"(got {v:g}); use a number in (0, 1], e.g. 0.9"
                    )
        return self

    def upper(self) -> float:
        """The largest length this distribution can produce (in its unit); inf when unbounded."""
        if self.dist == "constant":
            return float(self.value or 0)
        if self.max is not None:
            return float(self.max)
        return math.inf


class StageSpec(_Strict):
    duration_s: float = Field(gt=0, description="How long this stage lasts.")
    rate_multiplier: float = Field(1.0, gt=0, le=1000, description="Rate during the stage, x load.rate_rps.")


class LoadSpec(_Strict):
    rate_rps: float = Field(gt=0, le=1_000_000, description="Target arrival rate, all processes together.")
    arrivals: Literal["constant", "poisson"] = Field(
        "poisson", description="constant: evenly spaced; poisson: exponential gaps (open loop either way)."
    )
    ramp_up_s: float = Field(0.0, ge=0, le=3600, description="Linear ramp from 0 to the rate; not measured.")
    duration_s: float | None = Field(None, gt=0, le=7 * 86400, description="Measured time at the rate.")
    stages: list[StageSpec] = Field(
        default_factory=list, description="Rate steps after the ramp instead of duration_s (e.g. burst)."
    )
    max_in_flight: int = Field(
        1024,
        ge=1,
        le=200_000,
        description="Cap on requests in flight; an arrival beyond it is not sent and counts as overflow.",
    )
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="Per-request network timeout.")
    drain_timeout_s: float = Field(
        30.0, ge=0, le=3600, description="After the last arrival, wait this long for requests in flight."
    )
    seed: int = Field(0, ge=0, description="Seeds arrivals, the request mix and synthetic prompts.")

    @model_validator(mode="after")
    def _duration_or_stages(self) -> LoadSpec:
        if self.stages and self.duration_s is not None:
            total = sum(s.duration_s for s in self.stages)
            if abs(total - self.duration_s) > 1e-6:
                raise _PathError(
                    "load.duration_s",
                    self.duration_s,
                    f"the stages last {total:g} s; remove duration_s or make it {total:g}",
                )
        if not self.stages and self.duration_s is None:
            raise _PathError("load.duration_s", None, "required unless load.stages is given; e.g. 60")
        return self

    @property
    def measured_s(self) -> float:
        """Seconds after the ramp: the window the SLO gate measures."""
        return sum(s.duration_s for s in self.stages) if self.stages else float(self.duration_s or 0)


class PromptSpec(_Strict):
    source: Literal["synthetic", "sharegpt"] = Field(
        "synthetic", description="synthetic: generated text of sampled token lengths; sharegpt: a file."
    )
    path: str | None = Field(None, description="ShareGPT JSON file (source: sharegpt).")
    tokenizer: str | None = Field(
        None,
        description="tokenizer.json, a directory holding one, or tiny:<name>; lengths are measured "
        "with it. Unset: the chars_per_token estimate (results say so).",
    )
    chars_per_token: float = Field(
        4.0, gt=0.5, le=20, description="Estimate used only without a tokenizer (English BPE: about 4)."
    )
    pool_size: int = Field(128, ge=1, le=100_000, description="Distinct prompts built per request class.")

    @model_validator(mode="after")
    def _path(self) -> PromptSpec:
        if self.source == "sharegpt" and not self.path:
            raise _PathError(
                "workload.prompts.path", None, "source: sharegpt needs the JSON file; set path or pass --sharegpt FILE"
            )
        return self


class FunctionSpec(_Strict):
    """An OpenAI function definition: what the model may call and the JSON Schema of its arguments."""

    name: str = Field(description="Function name, 1-64 letters, digits, '_' or '-'.")
    description: str | None = Field(None, description="What the function does (the model reads it).")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments (an object). Bounded schemas (enums, integer ranges, "
        "strings with maxLength, additionalProperties: false) let guided decoding always finish.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _FUNCTION_NAME.fullmatch(v):
            raise ValueError("must be 1-64 letters, digits, '_' or '-' (OpenAI's rule), e.g. get_weather")
        return v


class ToolSpec(_Strict):
    """One entry of OpenAI's ``tools`` list."""

    type: Literal["function"] = Field("function", description="function: the kind agent frameworks send.")
    function: FunctionSpec


class JsonSchemaSpec(_Strict):
    """``response_format.json_schema``: the schema the answer's content must match."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )

    name: str = Field(description="Schema name, 1-64 letters, digits, '_' or '-'.")
    description: str | None = Field(None, description="What the answer is (the model may read it).")
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema (YAML key: schema).")
    strict: bool | None = Field(None, description="OpenAI's strict flag, sent as given; unset: not sent.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _FUNCTION_NAME.fullmatch(v):
            raise ValueError("must be 1-64 letters, digits, '_' or '-', e.g. weather_report")
        return v


class ResponseFormat(_Strict):
    """OpenAI's ``response_format`` for structured answers; the answer's content is validated against it."""

    type: Literal["json_schema", "json_object"] = Field(
        description="json_schema: content matches json_schema.schema; json_object: content is a JSON object."
    )
    json_schema: JsonSchemaSpec | None = Field(None, description="The schema, for type: json_schema.")

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name: my_answer, schema: {type: object, ...}}")
        if self.type == "json_object" and self.json_schema is not None:
            raise ValueError("json_schema goes with type: json_schema; change the type or remove json_schema")
        return self


class RequestClass(_Strict):
    """One weighted class of requests in the mix (a "persona")."""

    name: str = Field(description="Row name in Locust's stats and in the results.")
    weight: float = Field(1.0, gt=0, description="Relative share of arrivals.")
    api: Literal["chat", "completions"] = Field("chat", description="/v1/chat/completions or /v1/completions.")
    stream: bool = Field(True, description="SSE streaming (TTFT and ITL need it).")
    model: str | None = Field(
        None,
        description="Model id; default the scenario's. '{model}' expands to it, e.g. '{model}:sql' for a LoRA adapter.",
    )
    prompt_tokens: Dist | None = Field(None, description="Prompt length (synthetic prompts).")
    output_tokens: Dist = Field(description="max_tokens of each request.")
    ignore_eos: bool = Field(True, description="Generate exactly max_tokens (vLLM's ignore_eos).")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature; unset: server default.")
    tools: list[ToolSpec] | None = Field(
        None,
        description="OpenAI tools (chat only): the name of a built-in set ("
        + ", ".join(TOOL_SETS)
        + ") or a list of {type: function, function: {name, description, parameters}}.",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None,
        description="auto, required, none, or a named function {type: function, function: {name: N}}; "
        "unset: not sent (servers then read auto). required and named answers must carry a valid call.",
    )
    parallel_tool_calls: bool | None = Field(
        None, description="Sent as given; false allows one call per answer. Unset: not sent."
    )
    response_format: ResponseFormat | None = Field(
        None,
        description="Structured answer (chat only): {type: json_schema, json_schema: {name, schema}} "
        "or {type: json_object}; the answer's content must then match.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be 1-63 lowercase letters, digits, '.', '_' or '-', e.g. short-chat")
        return v

    @field_validator("tools", mode="before")
    @classmethod
    def _tool_set(cls, v: Any) -> Any:
        """A built-in set's name becomes its definitions, so results.json records exactly what was sent."""
        if isinstance(v, str):
            if v not in TOOL_SETS:
                close = difflib.get_close_matches(v, list(TOOL_SETS), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"no built-in tool set of that name; {hint}choose one of: "
                    f"{', '.join(TOOL_SETS)}, or list tool definitions"
                )
            return copy.deepcopy(TOOL_SETS[v])
        if isinstance(v, list) and not v:
            raise ValueError(
                "an empty list (servers reject tools: []); remove tools or name a built-in set, e.g. tools: agent-basic"
            )
        return v

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        if v is None or v in _TOOL_CHOICES:
            return v
        fn = v.get("function") if isinstance(v, dict) else None
        if (
            isinstance(v, dict)
            and set(v) == {"type", "function"}
            and v["type"] == "function"
            and isinstance(fn, dict)
            and set(fn) == {"name"}
            and isinstance(fn["name"], str)
        ):
            return v
        raise ValueError(f"choose one of: {', '.join(_TOOL_CHOICES)}, or a named function {_NAMED_CHOICE}")

    @property
    def forces_tool_call(self) -> bool:
        """tool_choice required or named: every answer must be a tool call."""
        return self.tool_choice == "required" or isinstance(self.tool_choice, dict)

    @property
    def checks_answer(self) -> bool:
        """Whether answers are checked for well-formed tool calls or JSON (see dsserve.loadgen.tools)."""
        return bool(self.tools) or self.response_format is not None

    def openai_fields(self) -> dict[str, Any]:
        """The tool and response-format fields of the request body, as OpenAI spells them."""
        out: dict[str, Any] = {}
        if self.tools:
            out["tools"] = [t.model_dump(mode="json", exclude_none=True) for t in self.tools]
        if self.tool_choice is not None:
            out["tool_choice"] = self.tool_choice
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        if self.response_format is not None:
            out["response_format"] = self.response_format.model_dump(mode="json", exclude_none=True)
        return out


class WorkloadSpec(_Strict):
    context_window: int | Literal["auto"] | None = Field(
        None,
        description="The model's context window in tokens; 'auto' reads max_request_context_length "
        "from the server's /v1/models. Needed by unit: context lengths; checks that requests fit.",
    )
    prompts: PromptSpec = Field(default_factory=PromptSpec)
    requests: list[RequestClass] = Field(min_length=1, description="The request mix.")

    @field_validator("context_window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> Any:
        if v is None or v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or not 16 <= v <= 10_000_000:
            raise ValueError("must be a whole number of tokens between 16 and 10000000, or auto")
        return v

    @model_validator(mode="after")
    def _mix(self) -> WorkloadSpec:
        names = [r.name for r in self.requests]
        for i, r in enumerate(self.requests):
            if names.index(r.name) != i:
                raise _PathError(f"workload.requests[{i}].name", r.name, "names must be unique; rename one")
            if self.prompts.source == "synthetic" and r.prompt_tokens is None:
                raise _PathError(
                    f"workload.requests[{i}].prompt_tokens",
                    None,
                    "synthetic prompts need a length; e.g. prompt_tokens: 128",
                )
            if r.prompt_tokens is not None and r.prompt_tokens.dist == "dataset":
                raise _PathError(
                    f"workload.requests[{i}].prompt_tokens.dist",
                    "dataset",
                    "prompt lengths come from the file itself with source: sharegpt; "
                    "remove prompt_tokens or choose another dist",
                )
            if r.output_tokens.dist == "dataset" and self.prompts.source != "sharegpt":
                raise _PathError(
                    f"workload.requests[{i}].output_tokens.dist",
                    "dataset",
                    "dataset lengths need workload.prompts.source: sharegpt",
                )
            for key in ("prompt_tokens", "output_tokens"):
                d = getattr(r, key)
                if d is not None and d.unit == "context" and self.context_window is None:
                    raise _PathError(
                        f"workload.requests[{i}].{key}.unit",
                        "context",
                        "needs workload.context_window (a number of tokens, or auto)",
                    )
            _check_tool_fields(f"workload.requests[{i}]", r)
            if isinstance(self.context_window, int):
                p = _tokens_upper(r.prompt_tokens, self.context_window) if r.prompt_tokens else 0
                o = _tokens_upper(r.output_tokens, self.context_window)
                if p + o > self.context_window:
                    raise _PathError(
                        f"workload.requests[{i}]",
                        r.name,
                        f"prompt up to {p:g} + output up to {o:g} tokens exceed the context "
                        f"window ({self.context_window}); lower the lengths or their max",
                    )
        return self


def _check_tool_fields(path: str, r: RequestClass) -> None:
    """Tools, tool_choice and response_format must make a request a server accepts and a check can judge."""
    _check_tool_usage(path, r)
    _check_tool_definitions(path, r)
    _check_answer_shape(path, r)


def _check_tool_usage(path: str, r: RequestClass) -> None:
    """Chat only; a choice or parallel_tool_calls only beside tools (vLLM rejects both otherwise)."""
    agentic = {
        "tools": r.tools,
        "tool_choice": r.tool_choice,
        "parallel_tool_calls": r.parallel_tool_calls,
        "response_format": r.response_format,
    }
    used = [k for k, v in agentic.items() if v is not None]
    if used and r.api != "chat":
        raise _PathError(f"{path}.api", r.api, f"{' and '.join(used)} need the chat API; use api: chat")
    for key in ("tool_choice", "parallel_tool_calls"):
        if agentic[key] is not None and not r.tools:
            raise _PathError(
                f"{path}.{key}",
                agentic[key],
                "needs tools: a built-in set (" + ", ".join(TOOL_SETS) + ") or a list of tool definitions",
            )


def _check_tool_definitions(path: str, r: RequestClass) -> None:
    """Unique names, argument schemas that are JSON Schemas of objects, a named choice that names one."""
    names = [t.function.name for t in r.tools or ()]
    for j, tool in enumerate(r.tools or ()):
        if names.index(tool.function.name) != j:
            raise _PathError(
                f"{path}.tools[{j}].function.name", tool.function.name, "tool names must be unique; rename one"
            )
        where = f"{path}.tools[{j}].function.parameters"
        _check_schema(where, tool.function.parameters)
        if tool.function.parameters.get("type") != "object":
            raise _PathError(
                f"{where}.type",
                tool.function.parameters.get("type"),
                "arguments are a JSON object: start the schema with type: object, properties: ...",
            )
    if r.response_format is not None and r.response_format.json_schema is not None:
        _check_schema(f"{path}.response_format.json_schema.schema", r.response_format.json_schema.schema_)
    if isinstance(r.tool_choice, dict) and r.tool_choice["function"]["name"] not in names:
        raise _PathError(
            f"{path}.tool_choice.function.name",
            r.tool_choice["function"]["name"],
            f"names no tool of this class; choose one of: {', '.join(names)}",
        )


def _check_answer_shape(path: str, r: RequestClass) -> None:
    """One kind of structured answer per class, and one that may end where it is complete."""
    if r.forces_tool_call and r.response_format is not None:
        raise _PathError(
            f"{path}.response_format",
            r.response_format.type,
            "a forced tool call (tool_choice required or named) answers with the call, not content; "
            "put response_format in a request class of its own, or use tool_choice: auto",
        )
    if r.ignore_eos and (r.response_format is not None or (r.tools and r.tool_choice != "none")):
        raise _PathError(
            f"{path}.ignore_eos",
            True,
            "a tool call or JSON answer ends when it is complete, and "
            "ignore_eos would make the model write on past it; set ignore_eos: false",
        )


def _check_schema(path: str, schema: dict[str, Any]) -> None:
    """A JSON Schema the scenario sends must be one: the error names the exact key inside it."""
    problem = schema_problem(schema)
    if problem is not None:
        inner, value, why = problem
        raise _PathError(path + inner, value, f"{why}; fix the schema")


def _tokens_upper(d: Dist, window: int) -> float:
    up = d.upper()
    return up * window if d.unit == "context" else up


class Threshold(_Strict):
    metric: Literal["ttft", "e2e", "itl", "tpot"] = Field(description="Which latency the threshold bounds.")
    percentile: float = Field(gt=0, le=100, description="e.g. 99 for p99.")
    max_ms: float = Field(gt=0, description="The bound, in milliseconds.")


class SloGate(_Strict):
    thresholds: list[Threshold] = Field(default_factory=list, description="Latency percentile bounds.")
    max_error_ratio: float = Field(
        0.001, ge=0, le=1, description="(failed + overflow + unfinished) / arrivals in the window."
    )
    min_rate_fraction: float = Field(
        0.98, gt=0, le=1, description="Requests sent in the window / requests scheduled in it."
    )


class GeneratorSpec(_Strict):
    """Limits beyond which the generator, not the server, is the bottleneck: the run is invalid."""

    max_lag_p99_ms: float = Field(25.0, gt=0, description="p99 of (send time - scheduled time) over the window.")
    max_cpu_percent: float = Field(
        90.0, gt=0, le=100, description="Mean CPU of any generator process over the window (one core = 100)."
    )


class Scenario(_Strict):
    version: Literal[1] = Field(1, description="Scenario format version.")
    name: str = Field(description="Scenario name (file stem by convention).")
    description: str = ""
    requires: list[Literal["lora"]] = Field(
        default_factory=list, description="Deployment features the scenario needs (lora: LoRA adapters)."
    )
    model: str | None = Field(None, description="Base model id; unset: the first id /v1/models lists.")
    load: LoadSpec
    workload: WorkloadSpec
    slo: SloGate = Field(default_factory=SloGate)
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be 1-63 lowercase letters, digits, '.', '_' or '-', e.g. slo-1200qps")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        streamed = any(r.stream for r in self.workload.requests)
        for i, t in enumerate(self.slo.thresholds):
            if t.metric in ("ttft", "itl", "tpot") and not streamed:
                raise _PathError(
                    f"slo.thresholds[{i}].metric",
                    t.metric,
                    "needs at least one streamed request class (stream: true); a non-streamed "
                    "response has no first token or token gaps to time",
                )
        if "lora" in self.requires and not any(r.model and ":" in r.model for r in self.workload.requests):
            raise _PathError(
                "requires",
                ["lora"],
                "a LoRA scenario needs request classes whose model is an adapter id, e.g. model: '{model}:my-adapter'",
            )
        return self


# ---------------------------------------------------------------------------------------------- loading


def shipped_scenarios() -> list[str]:
    """Names of the scenarios in loadtest/scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def find_scenario(name_or_path: str) -> Path:
    """A scenario file: an existing path, or the name of a shipped scenario."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if not p.suffix and "/" not in name_or_path:
        for root in (Path("loadtest/scenarios"), SCENARIO_DIR):
            shipped = root / f"{name_or_path}.yaml"
            if shipped.is_file():
                return shipped
    names = shipped_scenarios()
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ScenarioError(
        f"scenario {name_or_path!r}: no such file or shipped scenario; {hint}"
        f"shipped: {', '.join(names)} (or give a path to a YAML file)"
    )


def load_scenario(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override (``PATH=VALUE``, like ``--set``) and validate a scenario."""
    path = find_scenario(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read it: {exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    data = apply_overrides(data, overrides, where=str(path))
    return parse_scenario(data, where=str(path))


def parse_scenario(data: Any, *, where: str = "scenario") -> Scenario:
    """Validate a parsed YAML document; raise ScenarioError listing every problem, one per line."""
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{where}: the top level must be a mapping with keys name, load, workload, slo "
            f"(got {type(data).__name__}); see loadtest/scenarios/smoke.yaml"
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(
            describe_errors(exc, data, where, root=Scenario, example="loadtest/scenarios/smoke.yaml")
        ) from None


def apply_overrides(data: Any, overrides: list[str] | tuple[str, ...], *, where: str) -> Any:
    """Apply ``a.b.0.c=value`` overrides (values parsed as YAML; integers index lists)."""
    return _apply_overrides(data, overrides, where=where, error=ScenarioError, example="load.rate_rps=50")
