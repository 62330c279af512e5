"""The local stack behind `dsserve up`: a Ray runtime, Ray Serve, and the app built from one spec.

It owns the whole lifecycle on one machine, because a half-stopped stack is the failure users hit most:
Ray's HAProxy child outlives a killed driver and keeps port 8000, so the next start fails with "Address
already in use". Hence: ports are checked before anything starts, and :meth:`LocalStack.stop` shuts
Serve down before Ray, so no raylet, GCS, replica, vLLM engine or proxy process is left behind.

Use it as a context manager: ``with LocalStack(spec) as stack: stack.serve_forever()`` starts the stack,
serves until SIGINT or SIGTERM, and stops it however the block ends.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from dsserve.app import build_app, ray_cpus_needed
from dsserve.config import DeploymentSpec
from dsserve.errors import PortInUseError, StackError, StackSetupError
from dsserve.haproxy_launch import ENV_BINARY_PATH, LAUNCHER
from dsserve.serve_env import haproxy_launcher, haproxy_maxconn_wanted, scoped_environ, serve_env

if TYPE_CHECKING:
    from dsserve.local_prometheus import LocalPrometheus

__all__ = ["LocalStack", "check_port_free", "client_api_key"]
#: Behind HAProxy, Ray 2.60 keeps a stopping ingress replica open at least 30 s so that external load
#: balancers can deregister it (serve/_private/replica.py, RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S),
#: which made every Ctrl-C of `dsserve up` take 35 s. The only balancer in front of a local stack is
#: its own HAProxy, updated within ~0.1 s; in-flight requests are still waited for. A value already in
#: the environment wins; clusters (the Helm chart) keep Ray's 30 s for rolling upgrades.
LOCAL_DRAIN_ENV = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
_HAPROXY_PORTS = (8404, 9101)  # HAProxy's stats and metrics listeners

Progress = Callable[[str], None]


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")


def last_exception_line(text: str) -> str | None:
    """The last ``SomeError: message`` line of a traceback (Serve's status message carries the replica's)."""
    found = None
    for line in text.splitlines():
        m = _EXCEPTION_LINE.match(line.strip())
        if m is not None:
            found = f"{m.group(1)}: {m.group(2)[:500]}"
    return found


def client_api_key(spec: DeploymentSpec) -> str | None:
    """The first configured API key, for dsserve's own requests (health wait, sample); None without auth.

    Raises StackSetupError when the spec requires keys but the variable is unset or empty, or the key file is
    unreadable or holds no key, before anything starts: the ingress would refuse to start anyway, later
    and less clearly. Messages name the variable or file, never a key.
    """
    from dsserve.serving.auth import parse_keys

    first: str | None = None
    name, path = spec.api.api_keys_env, spec.api.api_keys_file
    if name:
        keys = [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]
        if not keys:
            raise StackSetupError(
                f"api.api_keys_env is {name}, but ${name} is unset or empty; export {name}=<key>[,<key>...] first"
            )
        first = keys[0]
    if path:
        try:
            with open(path, "rb") as f:
                keys = parse_keys(f.read().decode("utf-8", "replace"))
        except OSError as exc:
            raise StackSetupError(
                f"api.api_keys_file is {path}, but it cannot be read ({exc.__class__.__name__}: {exc.strerror or exc})"
            ) from None
        if not keys:
            raise StackSetupError(f"api.api_keys_file {path} holds no keys; write one key per line")
        first = first or keys[0]
    return first


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise PortInUseError when something already listens on host:port."""
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((probe_host, port)) == 0:
            raise PortInUseError(
                f"port {port} ({what}) on {probe_host} is already in use, probably by a dsserve or Ray "
                f"stack that was not stopped cleanly; stop it (Ctrl-C in its terminal, or `ray stop "
                f"--force`), or pick another port with --port"
            )


def _quiet_driver_logging() -> None:
    """Keep the terminal to dsserve's progress lines; replicas and engines still log in full to the log dir.

    Only this driver process is quietened. vLLM reads VLLM_LOGGING_LEVEL when first imported (here, by
    ray.serve.llm's config validation), so the variable is set just around that import: Ray's raylet
    already started with the user's environment, and the workers it spawns inherit that, not this.
    """
    with scoped_environ({"VLLM_LOGGING_LEVEL": "ERROR"}):
        try:
            import vllm  # noqa: F401  # imported for its side effect: vLLM configures its logging once
        except ImportError:  # a GPU cluster's driver may not carry vLLM; nothing to quieten
            pass
    for name in ("ray", "ray.serve", "vllm", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def haproxy_maxconn(spec: DeploymentSpec) -> int:
    """HAProxy's connection limit for a spec: every request the ingress may admit, and no more than the
    process's open-files limit allows (two descriptors per proxied connection, plus HAProxy's own).

    Ray 2.60 defaults RAY_SERVE_HAPROXY_MAXCONN to 4096 (serve/_private/constants.py); past it HAProxy
    leaves connections waiting in the kernel's accept queue, unanswered, however high the admission limit.
    """
    wanted = haproxy_maxconn_wanted(spec)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # HAProxy 2.8 asks for about 2 x maxconn + 4,500 descriptors and refuses to start without them.
    return max(1024, min(wanted, (soft - 5120) // 2))


def _raise_nofile() -> int:
    """Raise this process's soft open-files limit to its hard limit (Ray and HAProxy inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class LocalStack:
    """Start and stop one deployment spec on a local Ray runtime.

    ``with LocalStack(spec) as stack:`` starts it (until healthy, or ``timeout_s``) and stops it when the
    block ends, also when the start fails or is interrupted. While entered in the main thread, SIGINT
    (Ctrl-C) and SIGTERM (`kill`, Kubernetes) raise KeyboardInterrupt there, so a signal at any point,
    even mid-start, unwinds into :meth:`stop`; :meth:`serve_forever` waits for one. :meth:`start` and
    :meth:`stop` remain for callers that manage the lifetime themselves.
    """

    spec: DeploymentSpec
    progress: Progress = print
    verbose: bool = False
    #: started first and stopped with the stack (`dsserve up --prometheus`); see dsserve/local_prometheus.py
    prometheus: LocalPrometheus | None = None
    #: how long :meth:`start` waits for the app to deploy and answer
    timeout_s: float = 900.0
    _started: bool = field(default=False, init=False)
    _session_dir: str | None = field(default=None, init=False)
    #: what start() changed in this process (its environment override), undone by stop()
    _undo: ExitStack = field(default_factory=ExitStack, init=False, repr=False)
    #: the SIGINT/SIGTERM handlers in place before __enter__, put back by __exit__
    _saved_handlers: dict[int, Any] = field(default_factory=dict, init=False, repr=False)
    _signalled: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def __enter__(self) -> LocalStack:
        self._catch_signals()
        try:
            self.start()
        except BaseException as exc:  # a failed or interrupted start leaves nothing running either
            self._close(type(exc))
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(exc_type)

    def serve_forever(self) -> None:
        """Block until SIGINT or SIGTERM arrives, then return, so that the ``with`` block ends and stops.

        Needs the stack entered with ``with`` in the main thread, where the signal handlers are.
        """
        if not self._saved_handlers:
            # a caller's mistake, not a user's: no DsserveError (whose exit status would blame the deployment)
            raise RuntimeError("serve_forever() needs `with LocalStack(...)` in the main thread (signals go there)")
        try:
            while not self._signalled.wait(1.0):
                pass
        except KeyboardInterrupt:  # raised by _on_signal
            pass

    def _catch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set there; the owner of the thread stops the stack
        self._signalled.clear()
        for signum in _SHUTDOWN_SIGNALS:
            self._saved_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._signalled.is_set():  # a second Ctrl-C while stopping: let the default handler act
            signal.signal(signum, signal.SIG_DFL)
        self._signalled.set()
        raise KeyboardInterrupt

    def _close(self, exc_type: type[BaseException] | None) -> None:
        """Stop the stack, with further signals ignored until it is down; then put back the old handlers."""
        caught = bool(self._saved_handlers)
        if exc_type is KeyboardInterrupt or self._signalled.is_set():
            self.progress("interrupted")
        try:
            if caught:
                for signum in _SHUTDOWN_SIGNALS:
                    signal.signal(signum, signal.SIG_IGN)
            self.stop()
        finally:
            for saved, handler in self._saved_handlers.items():
                signal.signal(saved, handler)
            self._saved_handlers.clear()

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.spec.api.host in ("0.0.0.0", "") else self.spec.api.host
        return f"http://{host}:{self.spec.api.port}"

    def start(self, timeout_s: float | None = None) -> None:
        """Start Ray and Serve, deploy the app, and return once /v1/models answers 200 (default wait: the
        stack's ``timeout_s``). When it raises, what it began is still running: call :meth:`stop` (``with``
        does)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        spec = self.spec
        check_port_free(spec.api.host, spec.api.port, "the OpenAI API")
        env = serve_env(spec)
        if spec.serving.proxy == "haproxy":
            for port in _HAPROXY_PORTS:
                check_port_free("127.0.0.1", port, "Ray Serve's HAProxy")
            nofile = _raise_nofile()
            maxconn = haproxy_maxconn(spec)
            env["RAY_SERVE_HAPROXY_MAXCONN"] = str(maxconn)
            env.update(LOCAL_DRAIN_ENV)
            launcher = haproxy_launcher()
            if launcher is not None:
                env[ENV_BINARY_PATH] = launcher
            else:
                self.progress(
                    f"WARNING: {LAUNCHER} is not installed beside {sys.executable} (reinstall dsserve: "
                    "pip install -e .); HAProxy runs without api.http_request_timeout_s, with its "
                    "stats and exporter on every interface, and failed API keys are not throttled"
                )
        # A value already in the environment wins (a user's override); stop() undoes the rest.
        self._undo.enter_context(scoped_environ({k: v for k, v in env.items() if k not in os.environ}))
        if spec.serving.proxy == "haproxy":
            self.progress(
                f"HAProxy fast path: maxconn {os.environ['RAY_SERVE_HAPROXY_MAXCONN']} "
                f"(open-files limit {nofile}); gateway: {spec.serving.gateway}"
            )
            wanted = haproxy_maxconn_wanted(spec)
            if maxconn < wanted:
                self.progress(
                    f"WARNING: the admission limit lets {wanted - 1024} requests in, but the open-files limit "
                    f"({nofile}) lets HAProxy hold only {maxconn} connections; connections past that wait "
                    "unanswered in the accept queue. Raise the hard limit (`ulimit -Hn`, or LimitNOFILE= "
                    f"for a service) to at least {2 * wanted + 5120}, or lower serving.max_ongoing_requests / "
                    "max_queued_requests so that refusals come back as 503s."
                )

        self._resolve_model()
        if self.prometheus is not None:
            self.prometheus.start()
            self.progress(self.prometheus.describe())

        import ray
        from ray import serve

        num_cpus = max(os.cpu_count() or 1, ray_cpus_needed(spec))
        self.progress(f"starting a local Ray runtime ({num_cpus} logical CPUs)")
        started = time.monotonic()
        # ray.init replaces the process's SIGTERM handler (ray/_private/worker.py: sys.exit), and Ray core's
        # C++ failure-signal handler then aborts the driver (exit -6) mid-shutdown. Keep the caller's
        # handler, so SIGTERM stops the stack as cleanly as Ctrl-C does.
        caller_sigterm = signal.getsignal(signal.SIGTERM)
        ctx = ray.init(
            # "local": always a fresh runtime of our own. With no address ray.init joins any cluster that
            # `ray start` left on this machine (ray/_private/services.py get_ray_address_from_environment).
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=self.verbose,
            configure_logging=self.verbose,
            logging_level="INFO" if self.verbose else "WARNING",
            _metrics_export_port=spec.observability.metrics_export_port,
        )
        if callable(caller_sigterm) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, caller_sigterm)
        self._started = True
        self._session_dir = ctx.address_info.get("session_dir")
        if not self.verbose:
            _quiet_driver_logging()
        serve.start(http_options={"host": spec.api.host, "port": spec.api.port})
        if not self.verbose:
            _quiet_driver_logging()  # serve.start re-configures the "ray.serve" logger
        app = build_app(spec)
        from dsserve.sim.serving import engine_label

        self.progress(f"deploying {spec.model.id} ({engine_label(spec)}); Ray logs: {self.log_dir()}")
        self._run_and_watch(serve, app, started, timeout_s)
        self._wait_healthy(started, timeout_s)

    def _resolve_model(self) -> None:
        source = self.spec.model.source
        if source.is_tiny:
            from dsserve.tiny_models import build_tiny_model

            name = source.recipe
            t0 = time.monotonic()
            path, built = build_tiny_model(name, progress=lambda m: self.progress(f"tiny model: {m}"))
            how = f"built in {time.monotonic() - t0:.1f}s" if built else "already built"
            self.progress(f"model {name}: {path} ({how})")

    def _run_and_watch(self, serve: Any, app: Any, started: float, timeout_s: float) -> None:
        failure: list[BaseException] = []

        def deploy() -> None:
            try:
                serve.run(app, name=self.spec.name, route_prefix="/")
            except BaseException as exc:  # reported from the main thread
                failure.append(exc)

        worker = threading.Thread(target=deploy, name="dsserve-deploy", daemon=True)
        worker.start()
        last = ""
        while worker.is_alive():
            worker.join(timeout=2.0)
            elapsed = time.monotonic() - started
            line = self._status_line()
            if line and line != last:
                self.progress(f"[{elapsed:5.0f}s] {line}")
                last = line
            if elapsed > timeout_s:
                raise StackError(
                    f"the app was not running after {timeout_s:.0f}s ({line or 'no status'}); "
                    f"see the replica logs in {self.log_dir()}, or raise --timeout-s"
                )
        if failure:
            exc = failure[0]
            cause = self._replica_failure()
            raise StackError(
                f"deploying {self.spec.name} failed: {type(exc).__name__}: {str(exc)[:2000]}; "
                + (f"the replica said: {cause}; " if cause else "")
                + f"the replica logs are in {self.log_dir()}"
            ) from exc

    def _app_status(self) -> Any:
        """Serve's status of this spec's application; None before it exists or while Serve cannot say."""
        from ray import serve

        try:
            return serve.status().applications.get(self.spec.name)
        except Exception:  # progress and error messages only
            return None

    def _replica_failure(self) -> str | None:
        """The exception a failed deployment's replica raised, from Serve's status message (its traceback)."""
        app = self._app_status()
        for dep in app.deployments.values() if app is not None else ():
            cause = last_exception_line(dep.message or "")
            if cause:
                return cause
        return None

    def _status_line(self) -> str:
        app = self._app_status()
        if app is None:
            return "waiting for the Serve controller"
        parts = []
        for name, dep in app.deployments.items():
            states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(dep.replica_states.items()))
            parts.append(f"{name}: {dep.status.lower()}" + (f" ({states})" if states else ""))
        return f"app {app.status.lower()}; " + "; ".join(parts)

    def _wait_healthy(self, started: float, timeout_s: float) -> None:
        import httpx

        url = f"{self.base_url}/v1/models"
        key = client_api_key(self.spec)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        while True:
            status = "no answer"
            try:
                r = httpx.get(url, timeout=5.0, headers=headers)
                status = f"HTTP {r.status_code}"
                if r.status_code == 200 and any(m.get("id") == self.spec.model.id for m in r.json()["data"]):
                    self.progress(f"healthy after {time.monotonic() - started:.1f}s: GET {url} -> 200")
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() - started > timeout_s:
                raise StackError(
                    f"{url} did not answer 200 within {timeout_s:.0f}s (last: {status}); see {self.log_dir()}"
                )
            time.sleep(0.5)

    def log_dir(self) -> str:
        return os.path.join(self._session_dir or "/tmp/ray/session_latest", "logs")

    def stop(self) -> None:
        """Shut Serve down (replicas, engines, proxies), then Ray, then restore the environment; safe to call
        twice."""
        try:
            if self.prometheus is not None:
                self.prometheus.stop()
            if self._started:
                self._shutdown_ray()
        finally:
            self._undo.close()  # the environment start() changed, as it was

    def _shutdown_ray(self) -> None:
        import ray
        from ray import serve

        self.progress("draining in-flight requests, then shutting down Serve and Ray")
        try:
            # Delete the app first, while the proxy still holds client connections: Serve stops routing
            # to its replicas and lets each finish its ongoing requests (graceful shutdown), so a request
            # in flight at Ctrl-C or SIGTERM completes instead of losing its connection with the proxy.
            try:
                serve.delete(self.spec.name)
            except Exception as exc:  # the app may never have deployed; shutting down is what matters
                self.progress(f"could not drain the app ({type(exc).__name__}: {exc}); shutting down")
            serve.shutdown()
        finally:
            ray.shutdown()
            self._started = False
