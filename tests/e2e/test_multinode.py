"""A two-node profile on a real two-node Ray cluster: does its placement group land on both nodes?

``deploy/profiles/h800x16-deepseek-v3.yaml`` (DeepSeek-V3, TP8 x PP2 on 2 x 8 H800) needs one engine
replica spread over two nodes. The rendering tests check what `dsserve render serve-config` and
`dsserve render helm-values` say about that: 16 ``{GPU: 1}`` bundles, a strategy that may spill to a
second node, two worker pods of 8 GPUs.

The cluster tests then start a real two-node Ray cluster on this machine, exactly as docs/ray-cluster.md
tells an operator to: ``ray start --head`` and ``ray start --address=<head>``, each node advertising what
Ray advertises on an 8xH800 machine (8 GPUs and ``accelerator_type:H800``). A driver connected with
``ray.init(address=...)`` asks ray.serve.llm for the placement group it would request for the rendered
LLM config, creates it, and reads where its bundles landed from the GCS: 8 on each node. The same bundles
with ``STRICT_PACK`` must stay pending, so the check can fail.

What this does not touch: GPUs. ``--num-gpus`` declares logical resources only; a placement group reserves
them without starting any process, so no task, actor, worker process or CUDA context exists (a test checks
that no worker process started; Ray's start-up NVML probe finds no driver here and moves on). The driver
runs with ``CUDA_VISIBLE_DEVICES`` empty.

Isolation from everything else on the machine: every port is picked free at run time (Ray's defaults
6379, 8265, 10001, 8080, 52365 and its worker range are never used; Ray replaces a loopback node address
with the machine's own, so the nodes advertise that), sessions live in the cluster's own temp dir (never
/tmp/ray), the nodes and driver authenticate with the cluster's own token (never ``~/.ray``), the driver
runs in a subprocess (Ray's global state stays out of the pytest process), and teardown kills exactly the
processes the two ``ray start --block`` commands started, even when a test fails; they also get SIGTERM
if pytest itself dies.

The module needs no dsserve stack, so it carries no ``e2e`` marker: tests/e2e/conftest.py sorts unmarked
tests ahead of every stack group, so no stack is running while this cluster is up.
"""

from __future__ import annotations

import json
import os
import queue
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.conftest import REPO

PROFILE = REPO / "deploy" / "profiles" / "h800x16-deepseek-v3.yaml"
SOURCE = str(PROFILE.relative_to(REPO))
#: What Ray itself advertises on a node whose GPUs NVML names "NVIDIA H800" (ray._private.accelerators
#: .nvidia_gpu maps the name to "H800" and adds ``accelerator_type:H800: 1``); our nodes declare it by hand.
H800_NODE_RESOURCE = "accelerator_type:H800"
NODE_CPUS = 1  # the fewest that work: ray.serve.llm merges the replica actor's CPU into bundle 0
OBJECT_STORE_BYTES = 100 * 1024**2  # Ray's minimum is 75 MiB; nothing is stored
START_TIMEOUT_S = 90.0
DRIVER_TIMEOUT_S = 240.0
RESULT_PREFIX = "DSSERVE_MULTINODE_RESULT "

pytestmark = [
    pytest.mark.skipif(
        not PROFILE.is_file(),
        reason=f"{PROFILE.relative_to(REPO)} is absent: "
        "the two-node DeepSeek-V3 profile has not been added to deploy/profiles yet",
    ),
    pytest.mark.timeout(600),
]


# --- rendering -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec():
    from dsserve.config import load_spec

    return load_spec(PROFILE)


@pytest.fixture(scope="module")
def rendered_text(spec) -> str:
    """The Serve config exactly as `dsserve render serve-config PROFILE` writes it."""
    from dsserve.render.serve_config import render_serve_config

    return render_serve_config(spec, source=SOURCE)


@pytest.fixture(scope="module")
def rendered(rendered_text: str) -> dict[str, Any]:
    return yaml.safe_load(rendered_text)


@pytest.fixture(scope="module")
def llm_config(rendered) -> dict[str, Any]:
    from dsserve.app import llm_configs_of

    (app,) = rendered["applications"]
    (cfg,) = llm_configs_of(app["args"])
    return cfg


def test_profile_is_one_replica_over_two_8_gpu_nodes(spec) -> None:
    hw, eng = spec.hardware, spec.engine
    assert (hw.accelerator, hw.nodes, hw.gpus_per_node) == ("h800", 2, 8)
    assert (eng.tensor_parallel_size, eng.pipeline_parallel_size, eng.data_parallel_size) == (8, 2, 1)
    assert spec.model.architecture == "deepseek-v3"


def test_cli_renders_the_same_serve_config(tmp_path: Path, rendered) -> None:
    from dsserve.cli import main

    out = tmp_path / "serve.yaml"
    assert main(["render", "serve-config", str(PROFILE), "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == rendered


def test_renders_one_gpu_bundle_per_rank_with_a_strategy_that_spills(spec, llm_config) -> None:
    pgc = llm_config["placement_group_config"]
    ranks = spec.engine.tensor_parallel_size * spec.engine.pipeline_parallel_size
    assert ranks == spec.hardware.nodes * spec.hardware.gpus_per_node == 16
    assert pgc["bundles"] == [{"GPU": 1}] * ranks
    # PACK fills one node, then spills to the next (ray.serve.llm's cross-node default). STRICT_PACK could
    # never place 16 GPUs on 8-GPU nodes, and STRICT_SPREAD would want 16 nodes.
    assert pgc["strategy"] == "PACK", pgc
    assert llm_config["accelerator_config"] == {"kind": "gpu"}
    # Ray has no H800 accelerator constant: no accelerator_type, so bundles ask for GPUs by count only.
    assert "accelerator_type" not in llm_config


def test_serve_config_header_states_the_cluster_it_needs(rendered_text: str) -> None:
    """Whoever builds the cluster reads its shape at the top of the file they `serve deploy`."""
    header = "\n".join(line for line in rendered_text.splitlines() if line.startswith("#"))
    assert "Ray cluster: 2 nodes x 8 H800 GPUs" in header, header
    assert "16 {GPU: 1} bundles over 2 nodes, PACK" in header, header


def test_helm_values_give_one_worker_pod_per_node(spec) -> None:
    from dsserve.render.helm_values import helm_values

    worker = helm_values(spec, source=SOURCE)["worker"]
    assert worker["gpusPerPod"] == 8
    assert worker["replicas"] == worker["minReplicas"] == worker["maxReplicas"] == 2


# --- a real two-node Ray cluster -------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on every interface right now (held open together, so no duplicates)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
        return True


def _free_port_range(size: int) -> tuple[int, int]:
    """A block of free ports for Ray's worker ports, outside Ray's default 10002-19999 and the ephemeral range."""
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(20000, 30000 - size)
        if all(_bindable(p) for p in range(start, start + size)):
            return start, start + size - 1
    raise RuntimeError(f"no {size} consecutive free ports between 20000 and 30000")


@dataclass
class RayNode:
    """One `ray start --block` process; every Ray process of the node is its descendant."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class TwoNodeCluster:
    temp_dir: Path
    env: dict[str, str]
    address: str = ""
    nodes: list[RayNode] = field(default_factory=list)
    started: dict[int, psutil.Process] = field(default_factory=dict)
    #: what the cluster's own GCS says about its nodes once both are alive (from a driver)
    node_table: list[dict[str, Any]] = field(default_factory=list)
    driver: Driver | None = None

    def remember_processes(self) -> None:
        """Record every process the `ray start` commands started, to kill exactly those at the end."""
        for node in self.nodes:
            try:
                root = psutil.Process(node.proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    self.started.setdefault(p.pid, p)
            except psutil.NoSuchProcess:
                pass

    def logs(self) -> str:
        return "\n".join(f"--- {n.name} ({n.log}) ---\n{n.output()[-3000:]}" for n in self.nodes)

    def start_node(self, name: str, args: list[str]) -> RayNode:
        log = self.temp_dir / f"{name}.log"
        ray_cli = Path(sys.executable).with_name("ray")
        cmd = [str(ray_cli)] if ray_cli.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
        with log.open("wb") as out:
            # Its own session: `ray start --block` then leads a process group holding all its children.
            proc = subprocess.Popen(
                [*cmd, "start", "--block", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.temp_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        node = RayNode(name, proc, log)
        self.nodes.append(node)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in node.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"`ray start` for the {name} node did not come up (rc={proc.poll()}):\n{self.logs()}"
                )
            time.sleep(0.2)
        self.remember_processes()
        return node

    def stop(self) -> list[str]:
        """SIGKILL each node's process group, then any recorded process that left it; return survivors.

        Nothing here needs a graceful stop: the GCS keeps no state outside the temp dir, and nothing ran on
        the cluster. Each `ray start --block` leads a process group holding all of its node's processes.
        """
        self.remember_processes()
        for node in self.nodes:
            if node.proc.poll() is None:  # the leader is alive, so the group id is still ours
                os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait()
        for p in self.started.values():
            try:
                p.kill()  # psutil checks the process's creation time: never a recycled PID
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(list(self.started.values()), timeout=15)
        return [f"{p.pid} {p.name()}" for p in alive]


def _node_args(ports: list[int], worker_ports: tuple[int, int], resources: dict[str, float], gpus: int) -> list[str]:
    node_manager, object_manager, runtime_env, agent_grpc, agent_http, metrics = ports
    return [
        f"--num-cpus={NODE_CPUS}",
        f"--num-gpus={gpus}",
        f"--resources={json.dumps(resources)}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--metrics-export-port={metrics}",
        f"--min-worker-port={worker_ports[0]}",
        f"--max-worker-port={worker_ports[1]}",
        "--include-log-monitor=false",
        "--disable-usage-stats",
    ]


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when pytest dies (`ray start --block` then stops its node).

    libc is looked up here, in the parent: the hook runs between fork and exec, where importing could
    deadlock on a lock another thread held at fork.
    """
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def _cluster_env(token: str) -> dict[str, str]:
    # No inherited Ray settings (RAY_ADDRESS would point ray.init elsewhere), no CUDA device list (Ray
    # refuses --num-gpus=8 when CUDA_VISIBLE_DEVICES names fewer devices).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "CUDA_VISIBLE_DEVICES"}
    env.update(
        # Token auth with this cluster's own token, as every node and client of a real cluster shares one.
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        # Placement groups need no worker process: start none (Ray prestarts one per CPU otherwise).
        RAY_enable_worker_prestart="0",
        RAY_prestart_worker_first_driver="0",
        PYTHONUNBUFFERED="1",
    )
    return env


class Driver:
    """:func:`_driver` in its own interpreter: a Ray driver answering one JSON request per stdin line.

    Started before the nodes, so its slow imports (ray.serve.llm pulls in vLLM, ~9 s on two cores) overlap
    with `ray start`; it connects with ``ray.init(address=...)`` on the first request.
    """

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from tests.e2e.test_multinode import _driver; _driver()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=REPO,
                env=dict(env, CUDA_VISIBLE_DEVICES=""),  # the driver needs no device, and gets none
                preexec_fn=_die_with_parent(),
            )
        self.results: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # Ray and vLLM may print too: keep only our result lines
            if line.startswith(RESULT_PREFIX):
                self.results.put(line[len(RESULT_PREFIX) :])
        self.results.put(None)

    def ask(self, request: dict[str, Any], timeout_s: float = DRIVER_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.results.get(timeout=timeout_s)
        except queue.Empty:
            line = None
        reply = json.loads(line) if line else {"error": f"no answer in {timeout_s:.0f}s (rc={self.proc.poll()})"}
        if "error" in reply:
            tail = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise AssertionError(f"driver request {request['mode']!r} failed: {reply['error']}\n{tail}")
        return reply

    def close(self) -> None:
        """EOF on stdin: the driver disconnects (ray.shutdown) and exits; killed if it does not."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def cluster(spec, llm_config) -> Iterator[TwoNodeCluster]:
    """A real two-node Ray cluster on this machine, each node shaped like one node of the profile."""
    hw = spec.hardware
    assert hw.nodes == 2, "this fixture builds a two-node cluster"
    # Custom resources the rendered bundles ask for (none today), plus what Ray advertises on an H800 node.
    resources: dict[str, float] = {H800_NODE_RESOURCE: 1}
    for bundle in llm_config["placement_group_config"]["bundles"]:
        for key in bundle:
            if key not in ("CPU", "GPU", "memory"):
                resources.setdefault(key, hw.gpus_per_node)
    temp_dir = Path(tempfile.mkdtemp(prefix="dsmn-", dir="/tmp"))  # short: Ray's socket paths have a limit
    c = TwoNodeCluster(temp_dir=temp_dir, env=_cluster_env(secrets.token_hex(32)))
    c.driver = Driver(c.env, temp_dir / "driver.log")
    try:
        gcs, dashboard, client, *ports = _free_ports(3 + 12)
        first, last = _free_port_range(128)
        head_workers, node_workers = (first, first + 63), (first + 64, last)
        c.start_node(
            "head",
            [
                "--head",
                f"--port={gcs}",
                f"--temp-dir={temp_dir}",
                "--include-dashboard=false",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={client}",
                *_node_args(ports[:6], head_workers, resources, hw.gpus_per_node),
            ],
        )
        # The head's address as `ray start --head` wrote it (Ray turns loopback into the machine's IP).
        c.address = (temp_dir / "ray_current_cluster").read_text().strip()
        c.start_node(
            "worker",
            [
                f"--address={c.address}",
                f"--temp-dir={temp_dir}",
                *_node_args(ports[6:], node_workers, resources, hw.gpus_per_node),
            ],
        )
        c.node_table = c.driver.ask(
            {"mode": "nodes", "address": c.address, "expect_nodes": hw.nodes, "timeout_s": START_TIMEOUT_S}
        )["nodes"]
        c.remember_processes()
        yield c
    finally:
        c.driver.close()
        leftover = c.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftover, f"Ray processes left after teardown: {leftover}"


@pytest.fixture(scope="module")
def placement(cluster: TwoNodeCluster, llm_config) -> dict[str, Any]:
    """Where the rendered LLM config's placement group lands on the cluster, and its STRICT_PACK twin."""
    assert cluster.driver is not None
    report = cluster.driver.ask({"mode": "placement", "llm_config": llm_config})
    cluster.remember_processes()
    return report


def test_cluster_has_two_nodes_shaped_like_8xh800(cluster: TwoNodeCluster, spec) -> None:
    nodes = cluster.node_table
    assert len(nodes) == 2 and all(n["alive"] for n in nodes), nodes
    assert len({n["node_id"] for n in nodes}) == 2
    assert sorted(n["is_head"] for n in nodes) == [False, True], nodes
    assert {n["address"] for n in nodes} == {cluster.address.rsplit(":", 1)[0]}  # one machine, two nodes
    for n in nodes:
        assert n["resources"]["GPU"] == spec.hardware.gpus_per_node, n
        assert n["resources"][H800_NODE_RESOURCE] == 1, n
        assert n["resources"]["CPU"] == NODE_CPUS, n


def test_serve_requests_the_rendered_bundles(placement, llm_config) -> None:
    """ray.serve.llm asks for the rendered bundles, with the replica actor's CPU folded into bundle 0."""
    rendered = llm_config["placement_group_config"]
    assert placement["strategy"] == rendered["strategy"]
    expected = [dict(b) for b in rendered["bundles"]]
    expected[0]["CPU"] = expected[0].get("CPU", 0) + 1
    assert placement["bundles"] == expected


def test_placement_group_spans_both_nodes_8_bundles_each(placement, cluster: TwoNodeCluster) -> None:
    pg = placement["placement_group"]
    assert pg["placed"] and pg["state"] == "CREATED", pg
    assert pg["strategy"] == "PACK"
    bundle_nodes = pg["bundles_to_node_id"]
    assert sorted(int(i) for i in bundle_nodes) == list(range(16)), pg
    node_ids = {n["node_id"] for n in cluster.node_table}
    assert set(bundle_nodes.values()) == node_ids, (bundle_nodes, node_ids)
    assert sorted(Counter(bundle_nodes.values()).values()) == [8, 8], bundle_nodes
    # Both nodes' GPUs are all taken by this one replica.
    assert pg["gpus_available_while_held"] == 0


def test_strict_pack_cannot_place_the_same_bundles(placement) -> None:
    """The same 16 GPU bundles on one node: impossible with 8-GPU nodes, so the group stays pending."""
    pg = placement["strict_pack"]
    assert not pg["placed"], pg
    assert pg["state"] == "PENDING", pg
    assert not any(pg["bundles_to_node_id"].values()), pg  # no bundle on any node
    assert pg["scheduling_state"] == "INFEASIBLE", pg


def test_no_worker_process_ran_anywhere(placement, cluster: TwoNodeCluster) -> None:
    """The GPUs are logical: reserving them started no Ray worker, so nothing could have touched a device."""
    cluster.remember_processes()
    procs = [p for p in cluster.started.values() if p.is_running()]
    # A raylet's children are its two agents plus any worker it started (titled ray::IDLE, ray::<task>).
    workers = [
        f"{p.pid} {p.cmdline()[:1]}"
        for p in procs
        if _parent_name(p) == "raylet" and p.cmdline()[:1] not in (["ray::DashboardAgent"], ["ray::RuntimeEnvAgent"])
    ]
    assert not workers, workers
    assert {"gcs_server", "raylet"} <= {p.name() for p in cluster.started.values()}  # we see the real tree


def _parent_name(p: psutil.Process) -> str:
    try:
        parent = p.parent()
        return parent.name() if parent else ""
    except psutil.Error:
        return ""


# --- the driver, run in its own interpreter by Driver -----------------------------------------------


def _driver() -> None:
    """A Ray driver for the tests above: one JSON request per stdin line, one result line per request.

    ``nodes``: connect with ``ray.init(address=...)``, wait until the expected nodes are alive, describe
    them. ``placement``: create the placement group ray.serve.llm would request for the LLM config, read
    where its bundles landed, then try the same bundles with STRICT_PACK. EOF: disconnect and exit.
    """
    import ray
    from ray.llm._internal.serve.core.server.llm_server import LLMServer
    from ray.serve.llm import LLMConfig
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    def nodes(req: dict[str, Any]) -> dict[str, Any]:
        ray.init(address=req["address"], logging_level="WARNING", log_to_driver=False)
        deadline = time.monotonic() + req["timeout_s"]
        while len([n for n in ray.nodes() if n["Alive"]]) < req["expect_nodes"] and time.monotonic() < deadline:
            time.sleep(0.5)
        return {
            "nodes": [
                {
                    "node_id": n["NodeID"],
                    "alive": n["Alive"],
                    "address": n["NodeManagerAddress"],
                    "is_head": "node:__internal_head__" in n["Resources"],
                    "resources": n["Resources"],
                }
                for n in ray.nodes()
            ]
        }

    def place(bundles: list[dict[str, float]], strategy: str, wait_s: float) -> dict[str, Any]:
        pg = placement_group(bundles, strategy=strategy, name=f"dsserve-multinode-{strategy.lower()}")
        placed = pg.wait(timeout_seconds=wait_s)
        table = placement_group_table(pg)
        # The GCS learns each raylet's free resources a moment after the group commits: give it 10 s.
        deadline = time.monotonic() + 10
        while (gpus_left := ray.available_resources().get("GPU", 0.0)) and placed and time.monotonic() < deadline:
            time.sleep(0.2)
        remove_placement_group(pg)
        return {
            "placed": placed,
            "state": table["state"],
            "strategy": table["strategy"],
            "bundles_to_node_id": table["bundles_to_node_id"],
            "scheduling_state": table.get("stats", {}).get("scheduling_state"),
            "gpus_available_while_held": gpus_left,
        }

    def placement(req: dict[str, Any]) -> dict[str, Any]:
        # What Serve will request for this LLM config: ray.serve.llm's own deployment options.
        options = LLMServer.get_deployment_options(LLMConfig(**req["llm_config"]))
        bundles, strategy = options["placement_group_bundles"], options["placement_group_strategy"]
        return {
            "bundles": bundles,
            "strategy": strategy,
            "placement_group": place(bundles, strategy, 60),
            "strict_pack": place(bundles, "STRICT_PACK", 5),
        }

    for line in sys.stdin:
        req = json.loads(line)
        try:
            result = {"nodes": nodes, "placement": placement}[req["mode"]](req)
        except Exception:  # reported to the test, which fails with it
            result = {"error": traceback.format_exc()}
        print(RESULT_PREFIX + json.dumps(result), flush=True)
    if ray.is_initialized():
        ray.shutdown()
    os._exit(0)  # skip tearing down vLLM's and torch's modules: seconds on two busy cores
