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
    assert main(["validate", str(bad)]) == 2
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


def test_python_dash_m_dsserve_runs_the_cli() -> None:
    """`python -m dsserve` and `python -m dsserve.cli` (how tests and bench start `dsserve up`) both work."""
    for module in ("dsserve", "dsserve.cli"):
        r = subprocess.run(
            [sys.executable, "-m", module, "--version"], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and r.stdout.strip() == f"dsserve {__version__}", r.stdout + r.stderr


# --- exit status: one definition (dsserve.errors), the same under every command ------------------------

#: the documented status of every error class (README.md "Exit status"); a class whose code changes, or
#: a new class nobody placed, fails here
DOCUMENTED_EXIT_CODES = {
    "DsserveError": 2,
    "UsageError": 2,
    "SpecError": 2,
    "ModelBuildError": 2,
    "DashboardPushError": 2,
    "LoadtestError": 2,
    "ScenarioError": 2,
    "TargetError": 2,
    "StackError": 1,
    "StackSetupError": 2,
    "PortInUseError": 2,
    "PrometheusError": 1,
    "PrometheusMissingError": 2,
}


def test_every_error_class_has_its_documented_exit_code() -> None:
    import dsserve.loadgen.errors
    import dsserve.local_prometheus
    import dsserve.render.dashboards  # noqa: F401  (the modules defining the rest of the tree)
    from dsserve.errors import DsserveError, ExitCode

    assert [int(c) for c in ExitCode] == [0, 1, 2, 3]
    found: dict[str, int] = {}
    todo: list[type[DsserveError]] = [DsserveError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = int(cls.exit_code)
        todo.extend(cls.__subclasses__())
    assert found == DOCUMENTED_EXIT_CODES
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Exit status") :]
    section = section[: section.index("\n## ", 1)]
    for name in DOCUMENTED_EXIT_CODES:
        assert f"`{name}`" in section, f"README.md's Exit status section does not place {name}"


BAD_SPEC = "name: x\nmodel: {id: m, source: /m, architecture: deepseek-v9}\nengine: {tp: 2}\n"


def _on_profile(profile: str) -> list[list[str]]:
    """Every command that reads a deployment spec, on ``profile``."""
    return [
        ["validate", profile],
        ["plan", profile],
        ["plan", profile, "--sweep"],
        ["render", "serve-config", profile],
        ["render", "helm-values", profile],
        ["up", profile, "--no-sample"],  # fails while loading the spec: nothing starts
    ]


@pytest.mark.parametrize("argv", _on_profile("{bad}"), ids=lambda a: " ".join(a[:2]))
def test_a_bad_spec_exits_2_under_every_command(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC)
    assert main([a.replace("{bad}", str(bad)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("SpecError: ") and "engine.tp: unknown key" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", _on_profile("/nonexistent/profile.yaml"), ids=lambda a: " ".join(a[:2]))
def test_a_missing_spec_file_exits_2_under_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("SpecError: ") and "/nonexistent/profile.yaml" in err


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["loadtest", "/nonexistent/scenario.yaml", "--host", "http://127.0.0.1:9"], "ScenarioError: "),
        (["loadtest", "smoke", "--host", "http://127.0.0.1:9", "--set", "load.rate_rps=-1"], "ScenarioError: "),
        (["loadtest", "smoke", "--host", "http://127.0.0.1:9", "--processes", "0"], "ScenarioError: --processes"),
        (["plan"], "UsageError: dsserve plan: no PROFILE given"),
        (["tiny-model", "tiny-deepseek-v2", "tiny-gpt"], "UsageError: unknown tiny model or adapter 'tiny-gpt'"),
        (["render", "serve-config", "deploy/profiles/local-cpu.yaml", "-o", "/nonexistent/x.yaml"], "UsageError: -o "),
        (
            ["dashboards", "push", "--grafana-url", "http://h:9", "--token-env", "DSSERVE_NO_SUCH_VAR"],
            "UsageError: --token",
        ),
    ],
    ids=["scenario-missing", "scenario-field", "loadtest-flag", "plan-flag", "tiny-model", "render-output", "push"],
)
def test_bad_input_that_argparse_cannot_see_exits_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("DSSERVE_NO_SUCH_VAR", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(fragment.split(":")[0] + ": ") and fragment in err and "Traceback" not in err, err


def _leaf_commands() -> list[list[str]]:
    from dsserve.cli import COMMANDS
    from dsserve.cli.base import CommandGroup

    leaves = []
    for command in COMMANDS:
        if isinstance(command, CommandGroup):
            leaves += [[command.name, action.name] for action in command.actions]
        else:
            leaves.append([command.name])
    return leaves


@pytest.mark.parametrize("argv", _leaf_commands(), ids=" ".join)
def test_a_usage_error_exits_2_under_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--no-such-flag"])
    assert info.value.code == 2
    assert ": error: " in capsys.readouterr().err


def test_up_on_a_port_in_use_exits_2_and_leaves_the_process_as_it_was(capsys: pytest.CaptureFixture[str]) -> None:
    """Found before anything starts (no Ray here): bad input; the signal handlers and environment are restored."""
    import os
    import signal
    import socket

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), dict(os.environ))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["up", str(REPO / "deploy/profiles/local-cpu.yaml"), "--port", str(port), "--no-sample"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"PortInUseError: port {port}") and "--port" in err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), dict(os.environ)) == before


def test_plan_that_does_not_meet_exits_1_and_bad_input_2_in_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    """A verdict is not an error: 1 only when every input was good; bad input wins (2), nothing planned."""
    miss = str(REPO / "deploy/profiles/h800x8-deepseek-llm-67b-tp8.yaml")
    assert main(["plan", miss, "--qps", "1200"]) == 1
    assert main(["plan", miss, "/nonexistent/profile.yaml", "--qps", "1200"]) == 2
    assert "FAILS" in capsys.readouterr().out


# --- `dsserve loadtest`: its flags are LoadtestOptions' fields, declared once ------------------------------


def test_loadtest_flags_and_options_are_one_set_with_one_default_each() -> None:
    from dataclasses import fields

    from dsserve.cli import build_parser
    from dsserve.loadgen.options import LoadtestOptions

    args = build_parser().parse_args(["loadtest", "smoke", "--host", "http://h"])
    flags = set(vars(args)) - {"command", "run"}
    options = {f.name for f in fields(LoadtestOptions)} - LoadtestOptions.NOT_FLAGS
    assert flags == options, f"flags without a field: {flags - options}; fields without a flag: {options - flags}"
    opts = LoadtestOptions.from_args(args, argv=["dsserve", "loadtest"])
    assert opts == LoadtestOptions(scenario="smoke", host="http://h", argv=["dsserve", "loadtest"])
    given = build_parser().parse_args(
        ["loadtest", "x.yaml", "--host", "h", "--set", "a=1", "--set", "b=2", "--processes", "3", "-q"]
    )
    opts = LoadtestOptions.from_args(given)
    assert (opts.sets, opts.processes, opts.quiet, opts.scenario) == (["a=1", "b=2"], 3, True, "x.yaml")
