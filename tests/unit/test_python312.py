"""The request-body tests again under Python 3.12, the Python of the images (docker/Dockerfile*).

Python 3.12's ``json`` accepts nesting deeper than the interpreter's recursion limit, where 3.11 raises
RecursionError, so a recursive walk over a parsed body that is safe here failed with a 500 there.
``make install`` builds ``.venv-py312`` (pydantic, pytest, hypothesis) where ``python3.12`` is on PATH.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO

PY312 = REPO / ".venv-py312" / "bin" / "python"


def test_request_body_tests_pass_under_python_312() -> None:
    if not PY312.exists():
        pytest.skip("no .venv-py312: `make install` builds it where python3.12 is on PATH")
    version = subprocess.run(
        [str(PY312), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    assert version == "(3, 12)", version
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [str(PY312), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_request_body.py"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-500:]
