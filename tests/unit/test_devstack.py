"""dsserve/devstack.py, the server runner the e2e tests and the benchmarks share, on real child processes.

The servers here are small Python programs that behave like `dsserve up` where it matters: print READY when
serving, stop on SIGINT (or refuse to), start children of their own, or die before they are ready.
"""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from dsserve.devstack import VLLM_SHIM, ServerProcess, ServerStartError, free_port, wait_for_models

#: serves GET /v1/models on the port in argv[1] after ``delay`` seconds; READY once it listens
MODELS_SERVER = textwrap.dedent(
    """
    import http.server, json, signal, sys, time
    time.sleep(float(sys.argv[2]))
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"data": [{"id": "tiny"}]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    print("starting", flush=True)
    print("READY", flush=True)
    srv.serve_forever()
    """
)


def _server(tmp_path: Path, *, delay_s: float = 0.0, **kw: Any) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-c", MODELS_SERVER, str(port), str(delay_s)]
    return ServerProcess(name="models server", cmd=cmd, port=port, log_path=tmp_path / "log.txt", **kw)


def test_free_port_is_bindable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


def test_ready_at_its_line_then_a_clean_sigint_stop(tmp_path: Path) -> None:
    with _server(tmp_path, env={"DEVSTACK_TEST": "1"}) as server:
        assert server.start(timeout_s=30) == server.base_url == f"http://127.0.0.1:{server.port}"
        wait_for_models(server.base_url, 10, model="tiny")
        assert server.ready_s > 0 and server.proc is not None
        assert psutil.Process(server.proc.pid).environ()["DEVSTACK_TEST"] == "1"
    assert server.stopped_rc == 0 and not server.killed
    assert server.stop() == 0  # idempotent
    assert "READY" in server.output() and (tmp_path / "log.txt").read_text() == server.output()


def test_ready_when_v1_models_lists_the_model(tmp_path: Path) -> None:
    server = _server(tmp_path, delay_s=1.0, ready_line=None, model="tiny")
    try:
        server.start(timeout_s=30)
        assert server.ready_s >= 1.0
    finally:
        server.stop()
    wrong = _server(tmp_path, ready_line=None, model="another")
    with pytest.raises(ServerStartError, match="did not become ready in 2s"):
        wrong.start(timeout_s=2)
    assert wrong.proc is not None and wrong.proc.poll() is not None  # stopped, not left behind


def test_a_server_that_dies_before_ready_says_so_with_its_output(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "print('bad spec: engine.max_num_seqs'); raise SystemExit(2)"]
    server = ServerProcess(name="broken", cmd=cmd, port=free_port())
    with pytest.raises(ServerStartError, match=r"`broken` exited with 2:\nbad spec: engine.max_num_seqs"):
        server.start(timeout_s=30)


def test_one_that_ignores_sigint_is_killed_with_its_group(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        deaf = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", deaf])
        print("READY", flush=True)
        time.sleep(600)
        """
    )
    server = ServerProcess(
        name="stubborn", cmd=[sys.executable, "-c", code], port=free_port(), new_session=True, stop_timeout_s=1.0
    )
    server.start(timeout_s=30)
    assert server.proc is not None
    children = psutil.Process(server.proc.pid).children(recursive=True)
    assert children
    server.stop()
    assert server.killed and server.stopped_rc == -9
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


def test_commands_as_a_user_types_them() -> None:
    up = ServerProcess.dsserve_up("deploy/profiles/local-cpu.yaml", ["serving.replicas=2"], port=8123)
    assert up.cmd[1:] == ["-m", "dsserve.cli", "up", "deploy/profiles/local-cpu.yaml", "--port", "8123"] + [
        "--no-sample",
        "--set",
        "serving.replicas=2",
    ]
    assert up.name == "dsserve up local-cpu" and up.ready_line is not None
    vllm = ServerProcess.bare_vllm("/m", "tiny", ["--enforce-eager"], port=8124, env={"A": "b c"}, nice=15)
    assert vllm.cmd[1:3] == ["-c", VLLM_SHIM] and vllm.ready_line is None and vllm.model == "tiny"
    assert vllm.shown_cmd == (
        "A='b c' nice -n 15 vllm serve /m --served-model-name tiny --host 127.0.0.1 --port 8124 --enforce-eager"
    )
