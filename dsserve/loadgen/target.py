"""The server under test, asked before any load is sent: is it there, which models, which engine.

:func:`prepare_run` turns a scenario and a host into a :class:`RunConfig`: the one JSON document every
generator process needs (the validated scenario, the resolved model ids, the prompt pools, the name of the
API-key variable, where results go, and what produced the figures). `dsserve loadtest` writes it to
``<out>/run-config.json`` and hands it to Locust; a bare ``locust -f loadtest/locustfile.py
--dsserve-scenario NAME`` builds the same thing in the Locust master.

**Engine kind** (real vLLM or a simulated engine) is read from the server when it says so: dsserve publishes
its live layout in each model card (``metadata.dsserve.engine``: ``vllm`` or ``simulated``,
dsserve/serving/layout.py), and other servers may name it in ``metadata.engine_kind``. ``--engine
real|simulated`` overrides it (a disagreement is kept in the results as ``server_says``); a run with neither
is labelled ``unknown`` in its results and report.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from dsserve.loadgen.errors import ScenarioError, TargetError
from dsserve.loadgen.prompts import build_pools, load_token_counter, request_model
from dsserve.loadgen.scenario import Scenario

__all__ = ["RunConfig", "ServerInfo", "prepare_run", "probe_server", "server_info"]

#: Keys of a model card's metadata that may name the engine kind, after dsserve's own layout, in order of preference.
ENGINE_KEYS = ("engine_kind", "dsserve_engine", "engine")
#: dsserve's layout names the engine by backend (the spec's engine.backend); the load tester by kind.
_DSSERVE_BACKEND_KIND = {"vllm": "real", "simulated": "simulated"}


@dataclass
class ServerInfo:
    models: list[str]
    context_windows: dict[str, int]
    engine_kind: str | None
    engine_source: str | None


@dataclass
class RunConfig:
    """What every generator process needs; JSON round-trips through ``to_dict``/``from_dict``."""

    scenario: dict[str, Any]
    host: str
    model: str
    models: dict[str, str]  # request class -> model id it sends
    context_window: int | None
    pools: dict[str, dict[str, Any]]
    prompt_counter: dict[str, Any]
    api_key_env: str | None
    out_dir: str
    engine: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(**d)

    @property
    def spec(self) -> Scenario:
        return Scenario.model_validate(self.scenario)


def _headers(api_key_env: str | None) -> dict[str, str]:
    if not api_key_env:
        return {}
    key = os.environ.get(api_key_env)
    if not key:
        raise TargetError(
            f"--api-key-env {api_key_env}: the variable is not set (or empty); export it with "
            "the server's API key, or drop --api-key-env for a server without keys"
        )
    return {"Authorization": f"Bearer {key.split(',')[0].strip()}"}


def probe_server(host: str, api_key_env: str | None = None, timeout_s: float = 10.0) -> ServerInfo:
    """GET /v1/models: the served ids, their context windows and, if advertised, the engine kind."""
    import httpx

    url = host.rstrip("/") + "/v1/models"
    try:
        r = httpx.get(url, headers=_headers(api_key_env), timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise TargetError(
            f"--host {host}: nothing answers GET {url} ({type(exc).__name__}: {exc}); start the "
            "server (`dsserve up`) or fix the URL"
        ) from None
    if r.status_code == 401:
        raise TargetError(
            f"--host {host}: GET /v1/models answered 401: the server wants an API key; pass "
            "--api-key-env VAR with the key in $VAR"
        )
    if r.status_code != 200:
        raise TargetError(f"--host {host}: GET /v1/models answered HTTP {r.status_code}: {r.text[:200]}")
    try:
        return server_info(r.json()["data"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TargetError(
            f"--host {host}: GET /v1/models did not return an OpenAI model list: {r.text[:200]}"
        ) from None


def server_info(cards: list[dict[str, Any]]) -> ServerInfo:
    """The served ids, their context windows and the engine kind, from the model cards of ``GET /v1/models``."""
    windows: dict[str, int] = {}
    engine_kind = engine_source = None
    for c in cards:
        meta = c.get("metadata") or {}
        if not isinstance(meta, dict):
            continue
        ctx = meta.get("max_request_context_length")
        if isinstance(ctx, int) and ctx > 0:
            windows[c["id"]] = ctx
        if engine_kind is None:
            engine_kind, engine_source = _engine_of(meta)
    return ServerInfo([c["id"] for c in cards], windows, engine_kind, engine_source)


def _engine_of(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    layout = meta.get("dsserve")
    backend = layout.get("engine") if isinstance(layout, dict) else None
    if isinstance(backend, str) and backend:
        return _DSSERVE_BACKEND_KIND.get(backend, backend), "server: GET /v1/models metadata.dsserve.engine"
    for key in ENGINE_KEYS:
        v = meta.get(key)
        if isinstance(v, str) and v:
            return v, f"server: GET /v1/models metadata.{key}"
    return None, None


def prepare_run(
    scenario: Scenario,
    host: str,
    *,
    out_dir: str,
    api_key_env: str | None = None,
    engine: str = "auto",
    tokenizer: str | None = None,
    sharegpt: str | None = None,
    model: str | None = None,
    server: ServerInfo | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Check the server, resolve models and context window, build the prompt pools."""
    p = scenario.workload.prompts
    counter = load_token_counter(tokenizer or p.tokenizer, p.chars_per_token)  # local input first: fail fast
    info = server or probe_server(host, api_key_env)
    if not info.models:
        raise TargetError(f"--host {host}: GET /v1/models lists no model; is the deployment up?")
    base = model or scenario.model or info.models[0]
    models: dict[str, str] = {}
    missing = []
    for rc in scenario.workload.requests:
        mid = request_model(rc, base)
        models[rc.name] = mid
        if mid not in info.models:
            missing.append((rc.name, mid))
    if missing:
        lora = [m for _, m in missing if ":" in m]
        hint = (
            " This scenario needs a LoRA-enabled deployment serving those adapters: set model.lora in "
            "the spec (deploy/profiles/local-cpu-lora.yaml serves sql-adapter and chat-adapter; "
            "see docs/lora.md)."
            if lora
            else " Pass --model ID or set the scenario's model."
        )
        raise TargetError(
            f"--host {host}: the server does not serve "
            f"{', '.join(f'{m!r} (class {n})' for n, m in missing)}; it serves "
            f"{', '.join(info.models)}.{hint}"
        )
    window: int | None
    cw = scenario.workload.context_window
    if cw == "auto":
        window = info.context_windows.get(base)
        if window is None:
            raise TargetError(
                f"workload.context_window: auto, but GET /v1/models gives no "
                f"max_request_context_length for {base!r}; set it: --set workload.context_window=N"
            )
    else:
        window = cw if isinstance(cw, int) else None
    if window is not None:
        _check_fits(scenario, window)
    pools = build_pools(scenario, counter, context_window=window, sharegpt=sharegpt)
    if engine == "auto":
        if info.engine_kind:
            eng = {"kind": info.engine_kind, "source": info.engine_source}
        else:
            eng = {"kind": "unknown", "source": "not reported by the server and not given with --engine"}
    else:
        eng = {"kind": engine, "source": "flag: --engine"}
        if info.engine_kind and info.engine_kind != engine:
            eng["server_says"] = info.engine_kind
    return RunConfig(
        scenario=scenario.model_dump(mode="json"),
        host=host,
        model=base,
        models=models,
        context_window=window,
        pools={k: v.to_dict() for k, v in pools.items()},
        prompt_counter=counter.describe(),
        api_key_env=api_key_env,
        out_dir=out_dir,
        engine=eng,
        overrides=dict(overrides or {}),
    )


def _check_fits(scenario: Scenario, window: int) -> None:
    from dsserve.loadgen.scenario import _tokens_upper

    for i, rc in enumerate(scenario.workload.requests):
        p = _tokens_upper(rc.prompt_tokens, window) if rc.prompt_tokens else 0
        o = _tokens_upper(rc.output_tokens, window)
        if p + o > window:
            raise ScenarioError(
                f"workload.requests[{i}] ({rc.name}): prompt up to {p:g} + output up to {o:g} "
                f"tokens exceed the context window of {window}; lower the lengths"
            )
