"""A throwaway Prometheus for the local stack: `dsserve up --prometheus`.

It runs the distribution's ``prometheus`` binary (Debian: ``apt-get install prometheus``, which
``scripts/install-system-deps.sh`` does) with its own temporary data directory, a config that scrapes the
stack's Ray metrics port (and HAProxy's exporter when the profile uses the HAProxy proxy), and dsserve's
recording and alerting rules, rendered from :mod:`dsserve.render.prometheus_rules` (the very text of
``deploy/prometheus/rules/``). :meth:`LocalPrometheus.stop` kills it and removes the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from dsserve.errors import ExitCode, StackError
from dsserve.render.queries import PART_OF_LABEL

__all__ = ["LocalPrometheus", "PrometheusError", "PrometheusMissingError", "DEFAULT_PORT", "scrape_config"]

DEFAULT_PORT = 9090
HAPROXY_METRICS_PORT = 9101  # RAY_SERVE_HAPROXY_METRICS_PORT's default
_INSTALL_HINT = "run scripts/install-system-deps.sh (as root: apt-get install prometheus)"


class PrometheusError(StackError):
    """The local Prometheus could not start, or failed."""


class PrometheusMissingError(PrometheusError):
    """The Prometheus binary is not installed; found before anything starts, so bad input (exit 2)."""

    exit_code: ClassVar[ExitCode] = ExitCode.BAD_INPUT


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) != 0


def scrape_config(
    targets: dict[str, list[str]],
    *,
    rule_files: list[str],
    scrape_interval_s: float = 5.0,
    evaluation_interval_s: float | None = None,
) -> dict[str, Any]:
    """A Prometheus config scraping ``{job: [host:port, ...]}`` and loading ``rule_files``."""
    ival = f"{scrape_interval_s:g}s"
    return {
        "global": {
            "scrape_interval": ival,
            "scrape_timeout": f"{min(scrape_interval_s, 10):g}s",
            "evaluation_interval": f"{evaluation_interval_s or scrape_interval_s:g}s",
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            # the label the rules select dsserve's targets by (render/queries.py PART_OF_LABEL), as on Kubernetes
            {"job_name": job, "static_configs": [{"targets": list(hosts), "labels": {PART_OF_LABEL: "dsserve"}}]}
            for job, hosts in targets.items()
        ],
    }


@dataclass
class LocalPrometheus:
    """One local Prometheus process. Build with :meth:`for_spec` (or directly), then start/stop."""

    targets: dict[str, list[str]]
    port: int | None = None  # None: 9090 when free, else any free port
    scrape_interval_s: float = 5.0
    binary: str = "prometheus"
    with_rules: bool = True
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _dir: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        path = shutil.which(self.binary)
        if path is None:
            raise PrometheusMissingError(
                f"the Prometheus server binary {self.binary!r} is not on PATH; {_INSTALL_HINT}"
            )
        self.binary = path

    @classmethod
    def for_spec(cls, spec: Any, **kwargs: Any) -> LocalPrometheus:
        """Scrape a local stack of this spec: Ray's metrics port, plus HAProxy's exporter when used."""
        targets = {"dsserve-ray": [f"127.0.0.1:{spec.observability.metrics_export_port}"]}
        if spec.serving.proxy == "haproxy":
            targets["dsserve-haproxy"] = [f"127.0.0.1:{HAPROXY_METRICS_PORT}"]
        return cls(targets, **kwargs)

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("the local Prometheus has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        """Write the config and rules, start Prometheus, and return once it answers ``/-/ready``."""
        if self.running:
            return
        if self.port is None:
            from dsserve.devstack import free_port

            self.port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port()
        elif not _port_free(self.port):
            raise PrometheusError(f"port {self.port} on 127.0.0.1 is in use; stop what holds it or pick another port")
        self._dir = Path(tempfile.mkdtemp(prefix="dsserve-prometheus-"))
        rule_files: list[str] = []
        if self.with_rules:
            from dsserve.render.prometheus_rules import write_rules

            rule_files = [str(p) for p in write_rules(self._dir / "rules")]
        config = self._dir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                scrape_config(self.targets, rule_files=rule_files, scrape_interval_s=self.scrape_interval_s),
                sort_keys=False,
            )
        )
        log = open(self._dir / "prometheus.log", "wb")
        cmd = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self._dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            self._cleanup()
            raise PrometheusError(f"could not run {self.binary}: {exc}; {_INSTALL_HINT}") from exc
        finally:
            log.close()  # the child holds its own descriptor
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail, code = self.log_tail(), self._proc.returncode
                self._proc = None
                self._cleanup()
                raise PrometheusError(f"prometheus exited with status {code} at start:\n{tail}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise PrometheusError(f"prometheus was not ready within {timeout_s:.0f}s:\n{tail}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None or not (self._dir / "prometheus.log").is_file():
            return ""
        return "\n".join((self._dir / "prometheus.log").read_text(errors="replace").splitlines()[-lines:])

    def describe(self) -> str:
        jobs = ", ".join(f"{job} {' '.join(hosts)}" for job, hosts in self.targets.items())
        rules = "dsserve recording and alert rules" if self.with_rules else "no rules"
        return f"Prometheus at {self.url} (scraping {jobs} every {self.scrape_interval_s:g}s; {rules})"

    def query(self, expr: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Evaluate an instant PromQL query; return its result vector. Raises PrometheusError on errors."""
        import httpx

        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=timeout_s)
        data = r.json()
        if r.status_code != 200 or data.get("status") != "success":
            raise PrometheusError(f"query {expr!r} failed: HTTP {r.status_code}: {data.get('error', r.text)}")
        result = data["data"]["result"]
        return result if isinstance(result, list) else [result]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop Prometheus and delete its data; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
