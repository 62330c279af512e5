"""Build a cache artifact (a directory) at most once, atomically, however many processes ask for it.

The tiny models and tiny LoRA adapters are built on first use by whichever process needs them first:
`dsserve up`, a Ray Serve replica, a test, a benchmark. Several may ask at the same moment (two replicas
starting together, parallel test workers), and a build may die half way (no disk space, a missing extra).
So a build takes a lock next to its target, builds into a private temporary directory, writes a marker
last and renames the directory into place; the marker is what "built" means, and a failed build leaves
nothing behind but the lock file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsserve.errors import ModelBuildError

__all__ = ["build_once", "is_built"]


def is_built(dest: Path, marker: str) -> bool:
    """Whether ``dest`` holds a finished build (its marker is written last, inside the renamed directory)."""
    return (dest / marker).is_file()


def build_once(
    dest: Path,
    build: Callable[[Path], None],
    *,
    marker: str,
    record: Mapping[str, Any],
    what: str,
    hint: str,
) -> tuple[Path, bool]:
    """Build ``dest`` with ``build(tmp_dir)`` unless it is already built; return (dest, built_now).

    ``record`` is written to the marker file ``marker`` with the sha256 of every file and the build time.
    Concurrent callers wait on one lock, so exactly one builds and the others find its result. Any
    failure other than a :class:`ModelBuildError` becomes one, worded
    ``building <what> in <dir> failed: <error>; <hint>``.
    """
    if is_built(dest, marker):
        return dest, False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent / f".{dest.name}.lock"):
        if is_built(dest, marker):  # another process built it while this one waited
            return dest, False
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            build(tmp)
            for p in tmp.iterdir():
                p.chmod(0o644)  # Ray workers of other users may read it
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            meta = {**record, "files": files, "built_in_s": round(time.monotonic() - started, 2)}
            (tmp / marker).write_text(json.dumps(meta, indent=2))
            tmp.chmod(0o755)  # mkdtemp makes it private
            try:
                tmp.rename(dest)
            except OSError:
                # a builder that does not share this lock (another host on a shared cache) got there first
                if not is_built(dest, marker):
                    raise
        except ModelBuildError:
            raise
        except Exception as exc:  # torch/transformers/peft failures become a user-facing error
            raise ModelBuildError(
                f"building {what} in {dest.parent} failed: {type(exc).__name__}: {exc}; {hint}"
            ) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, True


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # O_RDONLY is enough for flock, so a cache another user created (and left readable) still locks
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
