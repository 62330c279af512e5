"""dsserve's replica flushes the first streamed chunk at once, then batches (ray-project/ray#59681)."""

from __future__ import annotations

import asyncio

from ray.llm._internal.serve.utils.batcher import Batcher

from dsserve.serving.server import FirstChunkBatcher


async def _tokens(n: int, gap_s: float):
    for i in range(n):
        await asyncio.sleep(gap_s)
        yield i


async def _first_batch_after(batcher_cls: type, interval_ms: float) -> tuple[float, list[list[int]]]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first_at, batches = None, []
    async for batch in batcher_cls(_tokens(10, 0.01), interval_ms=interval_ms).stream():
        first_at = first_at if first_at is not None else loop.time() - t0
        batches.append(list(batch))
    return first_at, batches


def test_the_first_chunk_is_not_held_for_the_batching_interval_but_the_rest_are_batched() -> None:
    ours_first, ours = asyncio.run(_first_batch_after(FirstChunkBatcher, 200))
    stock_first, stock = asyncio.run(_first_batch_after(Batcher, 200))
    assert ours[0] == [0] and ours_first < 0.1  # one 10 ms token, not the 200 ms interval
    assert stock_first >= 0.1  # upstream waits for the interval (the TTFT penalty)
    assert [x for b in ours for x in b] == list(range(10))  # nothing lost or reordered
    assert len(ours) <= 3  # still batched: 1 first chunk + the other 9 in one or two batches


def test_zero_and_none_intervals_behave_like_upstream() -> None:
    _, zero = asyncio.run(_first_batch_after(FirstChunkBatcher, 0))
    assert zero == [[i] for i in range(10)]

    async def whole() -> list[list[int]]:
        return [list(b) async for b in FirstChunkBatcher(_tokens(3, 0.0), interval_ms=None).stream()]

    assert asyncio.run(whole()) == [[0, 1, 2]]


def test_upstream_still_looks_for_the_old_tokenization_name() -> None:
    """Ray 2.60's VLLMEngine reads ``openai_serving_tokenization``; vLLM 0.32 sets ``serving_tokenization``.

    When this fails, upstream reads the new name: drop ``wire_tokenization`` (dsserve/serving/server.py).
    """
    import inspect

    from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine
    from vllm.entrypoints.launchers.api_server import app_state

    assert '"openai_serving_tokenization"' in inspect.getsource(VLLMEngine.start)
    assert "state.serving_tokenization = " in inspect.getsource(app_state)
    assert "state.openai_serving_tokenization" not in inspect.getsource(app_state)


def test_the_handler_vllm_made_is_given_to_the_engine_once() -> None:
    from types import SimpleNamespace

    from dsserve.serving.server import wire_tokenization

    handler = object()
    engine = SimpleNamespace(_oai_serving_tokenization=None, _app_state=SimpleNamespace(serving_tokenization=handler))
    assert wire_tokenization(engine) and engine._oai_serving_tokenization is handler
    assert not wire_tokenization(engine), "already set: left alone"
    assert not wire_tokenization(SimpleNamespace(_oai_serving_tokenization=None, _app_state=SimpleNamespace()))
