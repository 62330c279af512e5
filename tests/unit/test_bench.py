"""bench/ as a package: every script runs as ``python -m bench.<name>``, imports only public names, and
Benchmark A's config step plans the loads the docs describe."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCH = REPO / "bench"
SCRIPTS = sorted(
    p.stem
    for p in BENCH.glob("*.py")
    if p.stem not in ("__init__", "harness", "openloop") and "__main__" in p.read_text()
) + ["overhead"]


def test_the_scripts_are_the_documented_ones() -> None:
    assert SCRIPTS == [
        "foundation",
        "frontend_cpu",
        "gateway",
        "grammar_compile",
        "lora",
        "overload",
        "soak",
        "stock",
        "streams",
        "overhead",
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_runs_as_a_module_from_the_repository_root(name: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout and "bench/" + name + ".py" not in r.stdout


def test_no_path_hacks_and_no_private_imports_across_modules() -> None:
    for path in sorted(BENCH.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(REPO)
        assert "sys.path" not in text and "E402" not in text, rel
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("bench", "dsserve"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                # dsserve.app's tiny-source resolution is the one private helper the stock server shares
                assert private in ([], ["_resolve_tiny_sources"]), (rel, node.module, private)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in ("harness", "openloop"):
                pytest.fail(f"{rel}: import bench.{node.module}, not {node.module}")


def _args(*argv: str) -> argparse.Namespace:
    from bench.overhead.config import build_parser

    args = build_parser().parse_args(list(argv))
    args.duration_s, args.saturation_duration_s, args.ramp_s = 40.0, 20.0, 3.0
    return args


def test_overhead_loads_are_fractions_of_the_calibrated_capacity() -> None:
    from bench.overhead.config import plan_loads

    loads = plan_loads(_args(), 10.0)
    assert [(ld["name"], ld["rate"], ld["duration_s"]) for ld in loads] == [
        ("light", 0.5, 40.0),
        ("moderate", 4.0, 40.0),
        ("saturation", 20.0, 20.0),
    ]
    assert loads[1]["what"] == "0.4 x bare vLLM capacity" and loads[0]["ramp_s"] == 3.0
    assert [ld["name"] for ld in plan_loads(_args("--light-fraction", "0"), 10.0)] == ["moderate", "saturation"]


def test_overhead_rates_given_skip_calibration() -> None:
    from bench.overhead.config import plan_loads

    assert [(ld["name"], ld["rate"]) for ld in plan_loads(_args("--rates", "1", "2", "3"), None)] == [
        ("light", 1.0),
        ("moderate", 2.0),
        ("saturation", 3.0),
    ]
    assert [ld["name"] for ld in plan_loads(_args("--rates", "2", "3"), None)] == ["moderate", "saturation"]


def test_overhead_variants_parse_overrides_and_environment() -> None:
    from bench.overhead.config import parse_variant

    assert parse_variant("nice0:env:RAY_worker_niceness=0,serving.proxy=python") == (
        "nice0",
        ["serving.proxy=python"],
        {"RAY_worker_niceness": "0"},
    )
    for bad in ("nolabel", "x:serving.proxy", "x:env:NOVALUE"):
        with pytest.raises(argparse.ArgumentTypeError, match="--variant"):
            parse_variant(bad)
