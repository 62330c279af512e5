"""Tiny artifacts are built once, atomically: concurrent callers share one build, a failed one leaves nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dsserve.build_once import build_once
from dsserve.errors import ModelBuildError


def _writes(name: str, text: str = "weights") -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        (tmp / name).write_text(text)

    return build


def test_build_once_builds_then_finds(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "thing-abc"
    path, built = build_once(dest, _writes("w.bin"), marker="m.json", record={"name": "thing"}, what="x", hint="h")
    assert (path, built) == (dest, True)
    meta = json.loads((dest / "m.json").read_text())
    assert meta["name"] == "thing" and set(meta["files"]) == {"w.bin"} and meta["built_in_s"] >= 0
    assert (dest / "w.bin").stat().st_mode & 0o777 == 0o644 and dest.stat().st_mode & 0o777 == 0o755

    def must_not_run(tmp: Path) -> None:
        raise AssertionError("built twice")

    assert build_once(dest, must_not_run, marker="m.json", record={}, what="x", hint="h") == (dest, False)


def test_concurrent_callers_build_once(tmp_path: Path) -> None:
    dest = tmp_path / "thing-abc"
    builds: list[int] = []
    results: list[tuple[Path, bool]] = []
    start = threading.Barrier(4)

    def slow_build(tmp: Path) -> None:
        builds.append(threading.get_ident())
        time.sleep(0.3)  # long enough for every other caller to arrive while this one builds
        (tmp / "w.bin").write_text("weights")

    def caller() -> None:
        start.wait()
        results.append(build_once(dest, slow_build, marker="m.json", record={}, what="x", hint="h"))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert sorted(built for _, built in results) == [False, False, False, True]
    assert {path for path, _ in results} == {dest}


def test_failed_build_leaves_no_half_artifact(tmp_path: Path) -> None:
    dest = tmp_path / "thing-abc"

    def half_then_fail(tmp: Path) -> None:
        (tmp / "w.bin").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(ModelBuildError) as info:
        build_once(dest, half_then_fail, marker="m.json", record={}, what="thing", hint="free some space")
    assert str(info.value) == f"building thing in {tmp_path} failed: RuntimeError: disk full; free some space"
    assert [p.name for p in tmp_path.iterdir()] == [".thing-abc.lock"]  # no dest, no temporary directory
    # the next caller builds it from scratch
    assert build_once(dest, _writes("w.bin"), marker="m.json", record={}, what="x", hint="h") == (dest, True)


def test_build_errors_pass_through_unwrapped(tmp_path: Path) -> None:
    def refuse(tmp: Path) -> None:
        raise ModelBuildError("needs peft; run make install")

    with pytest.raises(ModelBuildError, match="^needs peft; run make install$"):
        build_once(tmp_path / "x", refuse, marker="m.json", record={}, what="x", hint="h")
    assert [p.name for p in tmp_path.iterdir()] == [".x.lock"]
