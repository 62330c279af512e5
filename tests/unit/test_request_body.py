"""Request-body parsing and shape checks, alone: what must hold on every Python the images run.

Imports nothing but dsserve.serving.body and pydantic, so ``tests/unit/test_python312.py`` runs this file
under Python 3.12 (the images' Python), whose ``json`` parses nesting deeper than the interpreter's
recursion limit, as well as under the suite's 3.11. Every check answers a client mistake with
InvalidRequest (400) or BodyTooLarge (413), never another exception (a 500).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsserve.serving.body import MAX_NESTING, ShapeLimits, _first_bad_string, parse_json, request_shape
from dsserve.serving.errors import BodyTooLarge, InvalidRequest

LIMITS = ShapeLimits(
    max_n=16,
    max_prompts=16,
    max_tokens=8192,
    max_messages=2048,
    max_tools=128,
    max_schema_bytes=32768,
    max_schema_depth=32,
)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 1_000, 100_000])
def test_deep_nesting_is_400_on_this_python(depth: int) -> None:
    raw = (
        '{"model": "m", "messages": [{"role": "user", "content": "x"}], "x": %s}' % ("[" * depth + "]" * depth)
    ).encode()
    with pytest.raises(InvalidRequest) as info:
        parse_json(raw)
    assert info.value.status == 400 and "deep" in info.value.body().decode()


def test_a_surrogate_deep_inside_is_400_not_500() -> None:
    """The 3.12 failure the review found: json parses 900 levels there, and a recursive walk for the lone
    surrogate then overflowed the interpreter's stack (500)."""
    raw = ('{"x": %s"\\ud800"%s}' % ("[" * 900, "]" * 900)).encode()
    with pytest.raises(InvalidRequest) as info:
        parse_json(raw)
    assert info.value.status == 400


def test_nesting_at_the_cap_passes() -> None:
    inner = MAX_NESTING - 1  # the body object is the first level
    data = parse_json(('{"x": %s}' % ("[" * inner + "]" * inner)).encode())
    assert "x" in data


def test_the_surrogate_walk_needs_no_recursion() -> None:
    data: Any = "\ud800"
    for _ in range(sys.getrecursionlimit() * 3):
        data = [data]
    assert _first_bad_string({"m": data}) == "m" + ".0" * (sys.getrecursionlimit() * 3)


def test_a_lone_surrogate_in_a_body_is_400_naming_the_field() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    with pytest.raises(InvalidRequest) as info:
        parse_json(raw)
    assert info.value.param == "messages.0.content"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": ["a"] * 64, "n": 16}, "prompt"),  # past max_prompts first
        ({"prompt": ["a"] * 4, "n": 8}, "n"),
        ({"prompt": ["a"] * 16, "n": 1}, None),
        ({"prompt": "a", "n": 17}, "n"),
        ({"prompt": "a", "max_tokens": 8193}, "max_tokens"),
        ({"prompt": "a", "max_completion_tokens": 9000}, "max_completion_tokens"),
    ],
)
def test_completion_shapes(body: dict, param: str | None) -> None:
    if param is None:
        assert request_shape({"model": "m", **body}, chat=False, limits=LIMITS).weight == 16
        return
    with pytest.raises(InvalidRequest) as info:
        request_shape({"model": "m", **body}, chat=False, limits=LIMITS)
    assert info.value.param == param


def test_chat_message_count_is_capped() -> None:
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(InvalidRequest) as info:
        request_shape({"messages": msgs * 2049}, chat=True, limits=LIMITS)
    assert info.value.param == "messages"
    assert request_shape({"messages": msgs * 2048, "n": 3}, chat=True, limits=LIMITS).weight == 3


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40,
)


def _check(raw: bytes) -> None:
    for chat in (True, False):
        try:
            data = parse_json(raw)
            request_shape(data, chat=chat, limits=LIMITS)
        except (InvalidRequest, BodyTooLarge) as err:
            assert 400 <= err.status < 500


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["model", "messages", "prompt", "n", "max_tokens", "x"]), JSON, max_size=5))
def test_fuzz_objects_never_raise_anything_but_a_client_error(data: dict) -> None:
    _check(json.dumps(data).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzz_bytes_never_raise_anything_but_a_client_error(raw: bytes) -> None:
    _check(raw)
