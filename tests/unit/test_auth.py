"""API keys and rate limits (dsserve/serving/auth.py): the key sources, rotation, constant-time matching, buckets."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

import pytest

from dsserve.serving import auth
from dsserve.serving.auth import (
    KeySourceError,
    KeyStore,
    RateLimiter,
    TokenBucket,
    bearer_token,
    parse_keys,
    retry_after_seconds,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- key sources ----------------------------------------------------------------------------------------------


def test_parse_keys_lines_commas_comments_and_blanks() -> None:
    text = "# rotated 2026-01\n\n  key-one  \nkey-two,key-three\n   # indented comment\nkey-one\nkey-#4\n"
    assert parse_keys(text) == ["key-one", "key-two", "key-three", "key-#4"]
    assert parse_keys("") == [] and parse_keys("# only\n\n") == []
    assert parse_keys("a\r\nb\r\n") == ["a", "b"]  # a Secret written on Windows


@pytest.mark.parametrize(
    "header,token",
    [
        ("Bearer k1", "k1"),
        ("bearer   k1 ", "k1"),
        ("BEARER k1", "k1"),
        ("Basic k1", None),
        ("k1", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_env_keys() -> None:
    store = KeyStore(env="KEYS", environ={"KEYS": " k1 , k2,,"})
    assert store.enabled and len(store) == 2
    assert store.match("k1") and store.match("k2") and store.match(b"k2") == store.match("k2")
    assert store.match("k3") is None and store.match(None) is None and store.match("") is None
    assert store.match("k1") != store.match("k2")


def test_no_sources_means_no_auth() -> None:
    store = KeyStore()
    assert not store.enabled and store.match("anything") is None


@pytest.mark.parametrize("environ", [{}, {"KEYS": ""}, {"KEYS": " , "}], ids=["unset", "empty", "commas"])
def test_env_without_keys_fails_at_start(environ: dict) -> None:
    with pytest.raises(KeySourceError, match=r"api.api_keys_env names \$KEYS, but it is unset or empty"):
        KeyStore(env="KEYS", environ=environ)


def test_file_without_keys_or_missing_fails_at_start_naming_the_file_not_its_text(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match="cannot be read on this node") as err:
        KeyStore(path=str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(err.value)
    empty = tmp_path / "keys"
    empty.write_text("# sk-commented-out-key\n\n")
    with pytest.raises(KeySourceError, match="holds no keys") as err:
        KeyStore(path=str(empty))
    assert "sk-commented-out-key" not in str(err.value)


def test_env_and_file_keys_are_both_accepted(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("file-key\n")
    store = KeyStore(env="KEYS", path=str(f), environ={"KEYS": "env-key"})
    assert store.match("env-key") and store.match("file-key") and len(store) == 2


def _rotate(path: Path, text: str) -> None:
    """What kubelet does to a Secret volume: write a new directory, then swap the ..data symlink."""
    base = path.parent
    new = base / f"..data_{len(list(base.glob('..data_*')))}"
    new.mkdir()
    (new / path.name).write_text(text)
    tmp = base / "..data_tmp"
    tmp.symlink_to(new.name)
    os.replace(tmp, base / "..data")


def test_rotated_secret_takes_effect_without_restart(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    _rotate(secret / "api-keys", "old-key\nkept-key\n")
    (secret / "api-keys").symlink_to("..data/api-keys")  # the mounted file, as in a Secret volume
    clock = Clock()
    store = KeyStore(path=str(secret / "api-keys"), clock=clock)
    assert store.match("old-key") and store.match("kept-key")
    kept = store.match("kept-key")

    _rotate(secret / "api-keys", "# rotated\nnew-key\nkept-key\n")
    assert store.match("old-key"), "checked at most once a second: not yet re-read"
    clock.t += 1.0
    assert store.match("old-key") is None and store.match("new-key") and store.reloads == 1
    assert store.match("kept-key") == kept  # a surviving key keeps its identity (and its rate-limit bucket)
    clock.t += 5.0
    assert store.match("new-key") and store.reloads == 1  # unchanged file: no re-read


def test_rewritten_file_in_place_is_noticed(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("aaaa\n")
    clock = Clock()
    store = KeyStore(path=str(f), clock=clock)
    f.write_text("bbbbbb\n")  # new size
    clock.t += 1.0
    assert store.match("bbbbbb") and store.match("aaaa") is None


def test_vanished_file_keeps_the_last_keys_and_empty_file_accepts_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "keys"
    f.write_text("sk-live-key\n")
    clock = Clock()
    store = KeyStore(path=str(f), clock=clock)
    f.unlink()
    clock.t += 1.0
    with caplog.at_level(logging.INFO, logger="dsserve.serving.auth"):
        assert store.match("sk-live-key"), "a file gone mid-rotation must not lock everyone out"
        f.write_text("# all keys revoked\n")
        clock.t += 1.0
        assert store.match("sk-live-key") is None, "an emptied key file revokes its keys (fails closed)"
    assert "sk-live-key" not in caplog.text and "cannot be read" in caplog.text and "no keys" in caplog.text


def test_every_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """hmac.compare_digest against every key, on equal-length digests: no early exit, no length leak."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    store = KeyStore(env="KEYS", environ={"KEYS": "first,a-much-longer-second-key,3"})
    for presented in ("first", "3", "wrong", "x" * 500):
        calls.clear()
        store.match(presented)
        assert calls == [(32, 32)] * 3, "every key compared, each as a 32-byte SHA-256 digest"


def test_store_keeps_digests_not_keys() -> None:
    store = KeyStore(env="KEYS", environ={"KEYS": "sk-plain-text"})
    assert hashlib.sha256(b"sk-plain-text").digest() in store.digests
    assert "sk-plain-text" not in repr(store) and b"sk-plain-text" not in b"".join(store.digests)


# -- token bucket and rate limiter ----------------------------------------------------------------------------


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)  # one token at 2/s: half a second away
    assert b.take(0.25) == pytest.approx(0.25)  # a refused request takes nothing
    assert b.take(0.5) == 0.0
    assert b.take(100.0) == 0.0 and b.tokens == pytest.approx(2.0)  # refill stops at the burst


def test_token_bucket_slow_rate_and_validation() -> None:
    b = TokenBucket(rate=0.1, burst=1, now=0.0)
    assert b.take(0.0) == 0.0 and b.take(0.0) == pytest.approx(10.0) and b.take(9.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0, now=0.0)


@pytest.mark.parametrize("wait,header", [(0.0001, 1), (0.5, 1), (1.0, 1), (1.0001, 2), (2.5, 3), (10.0, 10)])
def test_retry_after_rounds_up_to_whole_seconds(wait: float, header: int) -> None:
    assert retry_after_seconds(wait) == header


def test_rate_limiter_is_per_key_and_forgets_removed_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 2, clock=clock)
    a, b = b"a" * 32, b"b" * 32
    assert limiter.check(a) == 0.0 and limiter.check(a) == 0.0
    assert limiter.check(a) == pytest.approx(1.0)
    assert limiter.check(b) == 0.0, "another key has its own bucket"
    clock.t += 1.0
    assert limiter.check(a) == 0.0 and limiter.check(a) > 0
    limiter.retain([b])
    assert len(limiter) == 1 and limiter.check(a) == 0.0  # a key added back starts full


def test_the_pipeline_refuses_short_keys_at_start_and_ignores_them_on_rotation(tmp_path: Path) -> None:
    """A 5-character key can be guessed: a replica does not start with one; a rotated file's short keys are
    ignored (logged), the long ones accepted."""
    from dsserve.serving.auth import MIN_KEY_CHARS

    with pytest.raises(KeySourceError) as info:
        KeyStore(env="KEYS", environ={"KEYS": "abcde," + "x" * MIN_KEY_CHARS}, min_key_chars=MIN_KEY_CHARS)
    assert "$KEYS" in str(info.value) and "1 API key(s) shorter than 16" in str(info.value)
    assert "abcde" not in str(info.value)
    f = tmp_path / "keys"
    f.write_text("k" * MIN_KEY_CHARS + "\n")
    store = KeyStore(path=str(f), min_key_chars=MIN_KEY_CHARS)
    f.write_text("short\n" + "n" * 20 + "\n")
    store.refresh(force=True)
    assert store.match("short") is None and store.match("n" * 20) is not None


def test_the_pipeline_builds_its_key_store_with_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    from dsserve.serving.pipeline import PipelineSettings, RequestPipeline

    class Models:
        def served_ids(self) -> list[str]:
            return ["m"]

    monkeypatch.setenv("DSSERVE_TEST_SHORT_KEYS", "tiny")
    with pytest.raises(KeySourceError):
        RequestPipeline(lambda *a: None, PipelineSettings(api_keys_env="DSSERVE_TEST_SHORT_KEYS"), Models())
