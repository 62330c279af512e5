"""API keys and per-key rate limits for the OpenAI ingress.

Keys come from an environment variable (``api.api_keys_env``: comma-separated), a mounted file
(``api.api_keys_file``: one key per line, ``#`` comments, commas also separate keys so the same Secret
serves both), or both (the union). The file is re-read when it changes (its inode, size or mtime, checked
at most once a second), so a rotated Kubernetes Secret takes effect without a restart: kubelet swaps the
mounted directory's ``..data`` symlink atomically, which changes the inode the path resolves to.

Keys are never kept or shown as text: the store holds their SHA-256 digests, a presented key is hashed
once and compared against *every* digest with :func:`hmac.compare_digest` (constant time, equal lengths,
so neither which key matched nor any key's length shows in the timing), and the matching digest is what
the rate limiter is keyed by. Errors name the variable or the file, never a line of it.

The rate limit is a token bucket per key (``api.rate_limit``: ``requests_per_second`` refill, ``burst``
capacity), held in the memory of each replica that runs the request pipeline. Each holds its share of
the spec's figures (:mod:`dsserve.serving.shares`: divided by the replicas running now), so the
deployment as a whole allows what the spec says. A request takes as many tokens as it asks for
sequences (prompts x ``n``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "MIN_KEY_CHARS",
    "forwarded_client",
    "KeySourceError",
    "KeyStore",
    "RateLimiter",
    "TokenBucket",
    "bearer_token",
    "parse_keys",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

#: How often the key file's identity is checked for a change (a ``stat``), at most.
FILE_CHECK_INTERVAL_S = 1.0
#: The shortest API key the request pipeline accepts: 16 characters of hex are 64 bits, beyond guessing at
#: any request rate (``openssl rand -hex 24`` makes a 48-character one).
MIN_KEY_CHARS = 16


class KeySourceError(RuntimeError):
    """A configured key source is unusable; the message names the source, never a key."""


def parse_keys(text: str) -> list[str]:
    """Keys from a key file's text: one per line (or comma-separated), blanks and ``#`` comment lines skipped.

    A key is the text between separators with surrounding whitespace removed; keys never contain
    whitespace, commas or a leading ``#``. Duplicates are dropped, order kept.
    """
    keys: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split(","):
            part = part.strip()
            if part and not part.startswith("#"):
                keys.append(part)
    return list(dict.fromkeys(keys))


def _digest(key: str | bytes) -> bytes:
    raw = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    return hashlib.sha256(raw).digest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass
class KeyStore:
    """The accepted API keys (as digests), from an environment variable and/or a key file.

    ``env`` is the variable's *name*; ``path`` the key file. At construction every configured source must
    yield at least one key, or :class:`KeySourceError`: an unset secret must not silently open the API.
    Afterwards a changed file replaces the file's keys; a file that is gone or unreadable keeps the last
    keys read (logged), and a file with no keys left accepts none of its keys (fail closed).
    """

    env: str | None = None
    path: str | None = None
    environ: dict[str, str] | None = field(default=None, repr=False)  # tests pass theirs; default os.environ
    clock: Callable[[], float] = time.monotonic
    check_interval_s: float = FILE_CHECK_INTERVAL_S
    min_key_chars: int = 1  # the pipeline passes MIN_KEY_CHARS
    _env_digests: tuple[bytes, ...] = field(default=(), init=False, repr=False)
    _file_digests: tuple[bytes, ...] = field(default=(), init=False, repr=False)
    _file_sig: tuple[int, ...] | None = field(default=None, init=False, repr=False)
    _next_check: float = field(default=0.0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    reloads: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.env:
            environ = os.environ if self.environ is None else self.environ
            keys = parse_keys(environ.get(self.env, "").replace(",", "\n"))
            if not keys:
                raise KeySourceError(
                    f"api.api_keys_env names ${self.env}, but it is unset or empty on this node; "
                    f"export {self.env}=key1,key2 before starting Ray, or remove api.api_keys_env"
                )
            self._refuse_short(keys, f"${self.env}")
            self._env_digests = tuple(_digest(k) for k in keys)
        if self.path:
            try:
                sig, keys = self._read()
            except OSError as exc:
                raise KeySourceError(
                    f"api.api_keys_file is {self.path}, but it cannot be read on this node "
                    f"({exc.__class__.__name__}: {exc.strerror or exc}); mount the key file there "
                    "(one key per line), or remove api.api_keys_file"
                ) from None
            if not keys:
                raise KeySourceError(
                    f"api.api_keys_file {self.path} holds no keys; write one key per line "
                    "(# starts a comment), or remove api.api_keys_file"
                )
            self._refuse_short(keys, self.path)
            self._file_sig, self._file_digests = sig, tuple(_digest(k) for k in keys)
            self._next_check = self.clock() + self.check_interval_s

    def _refuse_short(self, keys: list[str], source: str) -> None:
        short = sum(len(k) < self.min_key_chars for k in keys)
        if short:
            raise KeySourceError(
                f"{source} holds {short} API key(s) shorter than {self.min_key_chars} characters, which can be "
                f"guessed; use long random keys (e.g. `openssl rand -hex 24`)"
            )

    def _long_enough(self, keys: list[str]) -> list[str]:
        kept = [k for k in keys if len(k) >= self.min_key_chars]
        if len(kept) < len(keys):
            log.warning(
                "API key file %s: %d key(s) shorter than %d characters ignored",
                self.path,
                len(keys) - len(kept),
                self.min_key_chars,
            )
        return kept

    @property
    def enabled(self) -> bool:
        """Whether any key source is configured (then every request needs a key)."""
        return bool(self.env or self.path)

    def _read(self) -> tuple[tuple[int, ...], list[str]]:
        with open(self.path, "rb") as f:  # type: ignore[arg-type]  # only called when path is set
            st = os.fstat(f.fileno())
            text = f.read().decode("utf-8", "replace")
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), parse_keys(text)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the key file if it changed (checked at most every ``check_interval_s``); True if reloaded."""
        if not self.path:
            return False
        now = self.clock()
        if not force and now < self._next_check:
            return False
        with self._lock:
            if not force and now < self._next_check:
                return False
            self._next_check = now + self.check_interval_s
            try:
                st = os.stat(self.path)
                sig: tuple[int, ...] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if sig == self._file_sig and not force:
                    return False
                sig, keys = self._read()
            except OSError as exc:
                log.warning(
                    "API key file %s cannot be read (%s); keeping the %d keys read before",
                    self.path,
                    exc.__class__.__name__,
                    len(self._file_digests),
                )
                return False
            keys = self._long_enough(keys)
            if not keys:
                log.warning("API key file %s now holds no keys; none of its keys is accepted", self.path)
            self._file_sig, self._file_digests = sig, tuple(_digest(k) for k in keys)
            self.reloads += 1
            log.info("API key file %s changed: %d keys", self.path, len(keys))
            return True

    @property
    def digests(self) -> tuple[bytes, ...]:
        return self._env_digests + self._file_digests

    def __len__(self) -> int:
        return len(set(self.digests))

    def match(self, presented: str | None) -> bytes | None:
        """The digest identifying the accepted key ``presented`` is, or None; constant time over all keys."""
        self.refresh()
        if presented is None:
            return None
        candidate = _digest(presented)
        found = None
        for d in self.digests:  # no early exit: every key is compared on every request
            if hmac.compare_digest(candidate, d):
                found = d
        return found


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; one request takes one token."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got rate={rate}, burst={burst})")
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.stamp = float(burst), now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float, n: int = 1) -> float:
        """Take ``n`` tokens: 0.0 if they were there, else the seconds until they will be (nothing taken)."""
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate

    def resize(self, rate: float, burst: int) -> None:
        """New refill rate and capacity (the replica's share changed); tokens held beyond it are dropped."""
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = min(self.tokens, self.burst)


def retry_after_seconds(wait_s: float) -> int:
    """A ``Retry-After`` value: the wait rounded up to whole seconds, at least 1."""
    return max(1, math.ceil(wait_s - 1e-9))


class RateLimiter:
    """One :class:`TokenBucket` per key (a new key starts with a full bucket).

    Keyed by API-key digest for the per-key rate limit, and by client address for failed keys (the
    pipeline's 60 failures per address, then 429). ``max_keys`` bounds the table for keys a client
    chooses (addresses): past it the least recently charged bucket is dropped, so a scan over many
    addresses cannot grow it without bound, and an address that keeps failing stays in it.
    """

    def __init__(
        self,
        requests_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int | None = None,
    ):
        TokenBucket(requests_per_second, burst, 0.0)  # validates
        self.rate, self.burst, self.clock, self.max_keys = requests_per_second, burst, clock, max_keys
        self._buckets: dict[bytes | str, TokenBucket] = {}

    def check(self, key_id: bytes | str, n: int = 1, *, take: bool = True) -> float:
        """0.0 when a request of ``n`` sequences may proceed (its tokens taken, unless ``take`` is False),
        else the seconds until the key has them."""
        now = self.clock()
        bucket = self._buckets.get(key_id)
        if not take:
            if bucket is None:  # a full bucket, not stored until something is taken from it
                return 0.0 if self.burst >= n else (n - self.burst) / self.rate
            bucket._refill(now)
            return 0.0 if bucket.tokens >= n else (n - bucket.tokens) / bucket.rate
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(self.rate, self.burst, now)
        elif self.max_keys is not None:
            self._buckets[key_id] = self._buckets.pop(key_id)  # most recently charged last
        if self.max_keys is not None:
            while len(self._buckets) > self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        return bucket.take(now, n)

    def resize(self, requests_per_second: float, burst: int) -> None:
        """Apply a new share of the deployment's limit to every key's bucket."""
        if (requests_per_second, burst) == (self.rate, self.burst):
            return
        TokenBucket(requests_per_second, burst, 0.0)  # validates
        self.rate, self.burst = requests_per_second, burst
        for bucket in self._buckets.values():
            bucket.resize(requests_per_second, burst)

    def retain(self, key_ids: Iterable[bytes]) -> None:
        """Forget the buckets of keys no longer accepted (after a key rotation)."""
        keep = set(key_ids)
        for k in [k for k in self._buckets if k not in keep]:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


def forwarded_client(value: bytes) -> str | None:
    """The client's address in the last ``X-Forwarded-For`` header's value: its last element, the one HAProxy
    appended (``option forwardfor``, after any header the client sent itself); None if empty."""
    address = value.decode("latin-1").rsplit(",", 1)[-1].strip()
    return address or None
