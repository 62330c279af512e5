"""The CLI: help for every command, one-line errors without tracebacks, correct exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsserve import __version__
from dsserve.cli import main
from tests.conftest import REPO


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["up", "--help"],
        ["validate", "--help"],
        ["tiny-model", "--help"],
        ["render", "serve-config", "--help"],
        ["render", "helm-values", "--help"],
        ["plan", "--help"],
        ["loadtest", "--help"],
        ["dashboards", "push", "--help"],
    ],
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage: dsserve" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"dsserve {__version__}"


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO / "deploy/profiles/local-cpu.yaml")]) == 0
    assert "ok: local-cpu" in capsys.readouterr().out


def test_validate_bad_file_is_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {id: m, source: /m, architecture: deepseek-v9}\nengine: {tp: 2}\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("SpecError: ") and "Traceback" not in err
    assert "model.architecture" in err and "engine.tp: unknown key" in err


def test_render_writes_file(tmp_path: Path) -> None:
    out = tmp_path / "serve.yaml"
    assert main(["render", "serve-config", str(REPO / "deploy/profiles/local-cpu.yaml"), "-o", str(out)]) == 0
    assert out.read_text().startswith("# Generated from deploy/profiles/local-cpu.yaml")


def test_console_script_runs_without_ray_import() -> None:
    """`dsserve validate` must stay fast: it may not import Ray or vLLM."""
    code = (
        "import sys; from dsserve.cli import main; main(['validate', 'deploy/profiles/local-cpu.yaml']); "
        "bad = [m for m in ('ray', 'vllm', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
