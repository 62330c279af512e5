"""The open-loop generator inside Locust: pacing per process, coordination across processes, the gate.

Roles, by Locust runner:

- **local** (one process, ``LocalRunner``): paces the whole rate and collects its own results.
- **master** (``--processes N``, or ``--master`` with N ``--worker`` processes on any machines): sends
  no requests. At test start it gives each worker a share index j of N and the run config (scenario,
  prompt pools, models); once every worker is ready and every user spawned it sends one common start time
  t0; it collects the workers' results, ends the test when all have drained, and runs the SLO gate.
- **worker**: paces its 1/N share of the rate (see :mod:`dsserve.loadgen.pacing`) and streams its results
  to the master every second.

Each generator process runs a :class:`ProcessPacer`: a dispatcher greenlet that sleeps until each arrival
is due and hands it to an idle :class:`~dsserve.loadgen.users.OpenLoopUser` (an in-flight slot); when no
slot is idle the arrival is counted as overflow, never delayed or silently dropped. After the last
arrival it waits up to ``drain_timeout_s`` for requests in flight, then reports. Send time minus due time
is the pacing lag: a generator that cannot keep up shows it there, and the gate calls the run invalid.

Messages (Locust custom messages): master->worker ``dsserve_plan`` and ``dsserve_go``;
worker->master ``dsserve_ready``, ``dsserve_results`` (every second) and ``dsserve_done``. Worker clocks
must agree with the master's (NTP) because t0 is a wall-clock time; on one machine they trivially do.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event

from dsserve.loadgen.gate import RunData
from dsserve.loadgen.measure import LogHistogram, RequestResult
from dsserve.loadgen.pacing import RateProfile, arrival_times
from dsserve.loadgen.prompts import PromptPool, sample_length
from dsserve.loadgen.scenario import Scenario
from dsserve.loadgen.target import RunConfig
from dsserve.loadgen.tools import AnswerCheck

__all__ = ["Controller", "ProcessPacer", "Ticket", "controller_of", "pacer_of"]

log = logging.getLogger("dsserve.loadgen")

MSG_PLAN, MSG_GO = "dsserve_plan", "dsserve_go"
MSG_READY, MSG_RESULTS, MSG_DONE = "dsserve_ready", "dsserve_results", "dsserve_done"
_ATTR = "dsserve_loadtest"
#: Seconds between a worker's result messages.
SHIP_INTERVAL_S = 1.0
#: Seconds every process gets between "go" and t0 (message delivery, users waking up).
GO_LEAD_S = 0.5
#: Seconds the master waits for every worker to be ready before it gives up.
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Ticket:
    """One arrival handed to a user: when it was due and what to send."""

    id: int
    sched_s: float
    cls_index: int
    prompt_index: int
    max_tokens: int


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    name: str
    api: str
    stream: bool
    body: bytes
    max_tokens: int
    ignore_eos: bool
    prompt_tokens_client: int | None
    check: AnswerCheck | None = None  # tool calls / JSON the answer must carry well-formed


class _Slot:
    __slots__ = ("event", "ticket")

    def __init__(self) -> None:
        self.event = Event()
        self.ticket: Ticket | None = None


class ProcessPacer:
    """This process's share of the arrivals, its idle users, and its results until they are shipped."""

    def __init__(
        self, config: RunConfig, share_index: int, share_count: int, send: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self.config = config
        self.scenario: Scenario = config.spec
        self.share = share_index
        self.share_count = share_count
        self.profile = RateProfile.from_load(self.scenario.load)
        self.window = self.profile.window
        self._send = send
        self.classes = self.scenario.workload.requests
        self._weights = [rc.weight for rc in self.classes]
        self._pools = {name: PromptPool.from_dict(p) for name, p in config.pools.items()}
        self._rng = random.Random(f"dsserve-mix:{self.scenario.load.seed}:{share_index}")
        self._json_prompts: dict[tuple[int, int], str] = {}
        # per class, built once: the tools/response_format body fields and the check of their answers
        self._agent_json = [_agent_fields_json(rc.openai_fields()) for rc in self.classes]
        self._checks = [AnswerCheck.for_class(rc) for rc in self.classes]
        key_env = config.api_key_env
        key = os.environ.get(key_env, "") if key_env else ""
        self.headers = {"Authorization": f"Bearer {key.split(',')[0].strip()}"} if key else {}
        self.problems: list[str] = []
        if key_env and not key:
            self.problems.append(f"generator process {share_index}: ${key_env} is not set, so it sends no API key")
        self._idle: deque[_Slot] = deque()
        self._handed: dict[int, list[float | None]] = {}  # ticket id -> [due_s, sent_s]
        self._rows: list[list[Any]] = []
        self._overflow: list[float] = []
        self._cpu: list[tuple[float, float, float]] = []
        self._itl = LogHistogram()
        self._scheduled_window = 0
        self._scheduled_total = 0
        self._next_id = 0
        self._t0_mono = 0.0
        self.started = Event()
        self.closed = False
        self._greenlets: list[gevent.Greenlet] = []

    # ---- called by users
    def now_s(self) -> float:
        return time.perf_counter() - self._t0_mono

    def next_ticket(self) -> Ticket:
        """Block until the dispatcher hands this (idle) user an arrival."""
        slot = _Slot()
        self._idle.append(slot)
        try:
            slot.event.wait()
        finally:
            if slot.ticket is None:
                try:
                    self._idle.remove(slot)
                except ValueError:
                    pass
        assert slot.ticket is not None
        return slot.ticket

    def request_for(self, t: Ticket) -> PreparedRequest:
        rc = self.classes[t.cls_index]
        pool = self._pools[rc.name]
        key = (t.cls_index, t.prompt_index)
        prompt_json = self._json_prompts.get(key)
        if prompt_json is None:
            prompt_json = self._json_prompts[key] = json.dumps(pool.texts[t.prompt_index])
        model = json.dumps(self.config.models[rc.name])
        parts = [f'{{"model": {model}, "max_tokens": {t.max_tokens}, "stream": {"true" if rc.stream else "false"}']
        if rc.api == "chat":
            parts.append(f', "messages": [{{"role": "user", "content": {prompt_json}}}]')
        else:
            parts.append(f', "prompt": {prompt_json}')
        if rc.stream:
            parts.append(', "stream_options": {"include_usage": true}')
        if rc.ignore_eos:
            parts.append(', "ignore_eos": true')
        if rc.temperature is not None:
            parts.append(f', "temperature": {rc.temperature!r}')
        parts.append(self._agent_json[t.cls_index])
        parts.append("}")
        return PreparedRequest(
            rc.name,
            rc.api,
            rc.stream,
            "".join(parts).encode(),
            t.max_tokens,
            rc.ignore_eos,
            pool.tokens[t.prompt_index],
            self._checks[t.cls_index],
        )

    def mark_sent(self, t: Ticket, sent_s: float) -> None:
        h = self._handed.get(t.id)
        if h is not None:
            h[1] = sent_s

    def complete(
        self, t: Ticket, sent_s: float, result: RequestResult | None, prompt_client: int | None, itl: list[float]
    ) -> None:
        if self.closed:
            return  # finished after the drain timeout: already reported as unfinished
        self._handed.pop(t.id, None)
        if result is None:
            result = RequestResult(
                cls=self.classes[t.cls_index].name,
                share=0,
                sched_s=0,
                sent_s=0,
                status=0,
                error="generator error: the request raised before it completed",
                ttft_ms=None,
                e2e_ms=None,
                tpot_ms=None,
                output_tokens=None,
                prompt_tokens=None,
                prompt_tokens_client=None,
                max_tokens=t.max_tokens,
            )
        result.share, result.sched_s, result.sent_s = self.share, t.sched_s, sent_s
        result.prompt_tokens_client = prompt_client
        self._rows.append(result.to_row())
        if result.error is None and self.window[0] <= sent_s < self.window[1]:
            for gap in itl:
                self._itl.add(gap)

    # ---- the dispatcher
    def start(self, t0_wall: float) -> None:
        self._t0_mono = time.perf_counter() + (t0_wall - time.time())
        self.started.set()
        self._greenlets = [gevent.spawn(self._dispatch), gevent.spawn(self._monitor), gevent.spawn(self._ship_loop)]

    def _new_ticket(self, due: float) -> Ticket:
        rng = self._rng
        ci = rng.choices(range(len(self.classes)), self._weights)[0] if len(self.classes) > 1 else 0
        rc = self.classes[ci]
        pool = self._pools[rc.name]
        pi = rng.randrange(len(pool.texts))
        mt = sample_length(rc.output_tokens, rng, self.config.context_window, pool.reply_tokens[pi])
        self._next_id += 1
        return Ticket(self._next_id, due, ci, pi, mt)

    def _dispatch(self) -> None:
        w0, w1 = self.window
        perf = time.perf_counter
        burst = 0
        for due in arrival_times(
            self.profile,
            self.scenario.load.arrivals,
            share_index=self.share,
            share_count=self.share_count,
            seed=self.scenario.load.seed,
        ):
            delay = self._t0_mono + due - perf()
            if delay > 0:
                gevent.sleep(delay)
                burst = 0
            else:
                burst += 1
                if burst % 64 == 0:  # behind schedule: still let users run
                    gevent.sleep(0)
            self._scheduled_total += 1
            if w0 <= due < w1:
                self._scheduled_window += 1
            ticket = self._new_ticket(due)
            if self._idle:
                slot = self._idle.pop()  # LIFO: the most recently idle user, whose connection is warm
                slot.ticket = ticket
                self._handed[ticket.id] = [due, None]
                slot.event.set()
            else:
                self._overflow.append(due)
        deadline = perf() + self.scenario.load.drain_timeout_s
        while self._handed and perf() < deadline:
            gevent.sleep(0.02)
        self._finish()

    def _monitor(self) -> None:
        import psutil

        proc = psutil.Process()
        proc.cpu_percent(None)
        psutil.cpu_percent(None)
        while not self.closed:
            gevent.sleep(1.0)
            self._cpu.append((self.now_s(), proc.cpu_percent(None), psutil.cpu_percent(None)))

    def _ship_loop(self) -> None:
        while not self.closed:
            gevent.sleep(SHIP_INTERVAL_S)
            if not self.closed:
                self._ship()

    def _ship(self) -> None:
        rows, self._rows = self._rows, []
        over, self._overflow = self._overflow, []
        cpu, self._cpu = self._cpu, []
        itl, self._itl = self._itl, LogHistogram()
        for i in range(0, max(1, len(rows)), 20000):
            self._send(
                MSG_RESULTS,
                {
                    "share": self.share,
                    "rows": rows[i : i + 20000],
                    "overflow": over if i == 0 else [],
                    "cpu": cpu if i == 0 else [],
                    "itl": itl.to_dict() if i == 0 else {},
                },
            )

    def _finish(self) -> None:
        self._ship()
        unfinished = [[due, sent if sent is not None else due] for due, sent in self._handed.values()]
        self.closed = True
        self._send(
            MSG_DONE,
            {
                "share": self.share,
                "scheduled": {"window": self._scheduled_window, "total": self._scheduled_total},
                "unfinished": unfinished,
                "problems": self.problems,
            },
        )


class Collector:
    """The master's (or the local process's) merged view of every process's results."""

    def __init__(self, share_count: int) -> None:
        self.share_count = share_count
        self.rows: list[RequestResult] = []
        self.overflow: list[tuple[int, float]] = []
        self.unfinished: list[tuple[int, float, float]] = []
        self.cpu: dict[int, list[tuple[float, float, float]]] = {}
        self.itl = LogHistogram()
        self.scheduled: dict[int, dict[str, int]] = {}
        self.problems: list[str] = []
        self.done: set[int] = set()

    def on_results(self, d: dict[str, Any]) -> None:
        share = int(d["share"])
        self.rows.extend(RequestResult.from_row(r) for r in d["rows"])
        self.overflow.extend((share, float(t)) for t in d["overflow"])
        self.cpu.setdefault(share, []).extend(tuple(c) for c in d["cpu"])
        self.itl.merge({int(k): v for k, v in d["itl"].items()})

    def on_done(self, d: dict[str, Any]) -> None:
        share = int(d["share"])
        self.scheduled[share] = dict(d["scheduled"])
        self.unfinished.extend((share, float(a), float(b)) for a, b in d["unfinished"])
        self.problems.extend(d.get("problems") or [])
        self.done.add(share)

    @property
    def all_done(self) -> bool:
        return len(self.done) >= self.share_count

    def run_data(self, scenario: Scenario) -> RunData:
        return RunData(
            profile=RateProfile.from_load(scenario.load),
            arrivals=scenario.load.arrivals,
            share_count=self.share_count,
            rows=self.rows,
            overflow=self.overflow,
            unfinished=self.unfinished,
            scheduled=self.scheduled,
            cpu=self.cpu,
            itl=self.itl,
            problems=self.problems,
        )


class Controller:
    """Per Locust process: the role it plays in the run, and the state that role needs."""

    def __init__(self, environment: Any, role: str, config: RunConfig | None) -> None:
        self.environment = environment
        self.role = role  # local | master | worker | debug
        self.config = config
        self.pacer: ProcessPacer | None = None
        self.collector: Collector | None = None
        self.shares: dict[str, int] = {}  # master: worker client id -> share index
        self.ready: set[int] = set()
        self.spawned = False
        self.go_at: float | None = None
        self.started_at: float | None = None
        self.aborted: str | None = None
        self.finished = False
        self.results: dict[str, Any] | None = None
        self.bad_input: str | None = None
        self.bad_input_exit = 0  # the exit status of the error behind bad_input (dsserve.errors.ExitCode)
        self.pacer_ready = Event()

    # ---- sizing
    @property
    def users_total(self) -> int:
        assert self.config is not None
        n = max(1, len(self.shares)) if self.role == "master" else 1
        return max(self.config.spec.load.max_in_flight, n)

    def shape_tick(self) -> tuple[int, float] | None:
        """The user count to hold, or None when the run is over (every process drained, or it gave up)."""
        if self.config is None or self.finished:
            return None
        now = time.time()
        if self.started_at is None:
            self.started_at = now
        if self.collector is not None and self.collector.all_done:
            self.finished = True
            return None
        load = self.config.spec.load
        if self.go_at is None and now - self.started_at > READY_TIMEOUT_S:
            self.aborted = (
                f"the generator processes were not ready within {READY_TIMEOUT_S:g} s (ready: {sorted(self.ready)})"
            )
            self.finished = True
            return None
        if self.go_at is not None and now > self.go_at + load.ramp_up_s + load.measured_s + load.drain_timeout_s + 60:
            self.aborted = "the generator processes did not report the end of their schedule in time"
            self.finished = True
            return None
        users = self.users_total
        return users, float(min(max(users, 1), 5000))

    # ---- master / local
    def on_test_start(self) -> None:
        runner = self.environment.runner
        if self.role == "master":
            assert self.config is not None
            clients = sorted(
                runner.clients.ready + runner.clients.spawning + runner.clients.running,
                key=lambda c: runner.get_worker_index(c.id),
            )
            self.shares = {c.id: j for j, c in enumerate(clients)}
            self.collector = Collector(len(clients))
            for cid, j in self.shares.items():
                runner.send_message(
                    MSG_PLAN, {"config": self.config.to_dict(), "share_index": j, "share_count": len(clients)}, cid
                )
            log.info(
                "dsserve: %d generator processes share %.6g req/s (%.6g each)",
                len(clients),
                self.config.spec.load.rate_rps,
                self.config.spec.load.rate_rps / max(1, len(clients)),
            )
        elif self.role in ("local", "debug"):
            assert self.config is not None
            self.collector = Collector(1)
            self.pacer = ProcessPacer(self.config, 0, 1, self.deliver)
            self.pacer_ready.set()
            self.ready.add(0)
            if self.role == "debug":
                self.pacer.start(time.time() + 0.1)

    def deliver(self, kind: str, data: dict[str, Any]) -> None:
        """A generator's results or done message, to the collector: called by the pacer in a one-process run,
        and for the workers' messages in the master (which made the collector on their MSG_READY)."""
        assert self.collector is not None
        if kind == MSG_RESULTS:
            self.collector.on_results(data)
        elif kind == MSG_DONE:
            self.collector.on_done(data)

    def on_spawning_complete(self) -> None:
        if self.role in ("master", "local"):
            self.spawned = True
            self._maybe_go()

    def on_ready(self, data: dict[str, Any]) -> None:
        self.ready.add(int(data["share"]))
        self._maybe_go()

    def _maybe_go(self) -> None:
        if self.go_at is not None or not self.spawned or self.collector is None:
            return
        if len(self.ready) < self.collector.share_count:
            return
        t0 = time.time() + GO_LEAD_S
        self.go_at = t0
        if self.role == "master":
            self.environment.runner.send_message(MSG_GO, {"t0": t0})
        else:
            assert self.pacer is not None
            self.pacer.start(t0)
        log.info(
            "dsserve: all %d generator processes ready; arrivals start in %.1f s", self.collector.share_count, GO_LEAD_S
        )
        gevent.spawn(self._progress, t0)

    def _progress(self, t0: float) -> None:
        """A line every few seconds while the run lasts, from what the processes reported so far."""
        assert self.collector is not None and self.config is not None
        end = self.config.spec.load.ramp_up_s + self.config.spec.load.measured_s
        seen = 0
        while not self.finished and not self.collector.all_done:
            gevent.sleep(5.0)
            rows = self.collector.rows
            new = rows[seen:]
            seen = len(rows)
            if not new:
                continue
            ok = [r for r in new if r.ok]
            e2e = sorted(r.e2e_ms for r in ok if r.e2e_ms is not None)
            p99 = e2e[min(len(e2e) - 1, int(0.99 * len(e2e)))] if e2e else float("nan")
            log.info(
                "dsserve: t=%.0f/%.0fs  %d completed since the last line (%d failed; %d overflow so far), "
                "p99 E2E %.0f ms",
                time.time() - t0,
                end,
                len(new),
                len(new) - len(ok),
                len(self.collector.overflow),
                p99,
            )

    # ---- worker
    def on_plan(self, data: dict[str, Any]) -> None:
        self.config = RunConfig.from_dict(data["config"])
        runner = self.environment.runner
        self.pacer = ProcessPacer(
            self.config,
            int(data["share_index"]),
            int(data["share_count"]),
            lambda kind, d: runner.send_message(kind, d),
        )
        self.pacer_ready.set()
        runner.send_message(MSG_READY, {"share": self.pacer.share})

    def on_go(self, data: dict[str, Any]) -> None:
        assert self.pacer is not None
        self.pacer.start(float(data["t0"]))


def _agent_fields_json(fields: dict[str, Any]) -> str:
    """``, "tools": [...], ...`` to splice into a request body; empty for a class without such fields."""
    return "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items())


def controller_of(environment: Any) -> Controller | None:
    return getattr(environment, _ATTR, None)


def pacer_of(environment: Any) -> ProcessPacer:
    """The process's pacer, waiting for it if the user started before the plan arrived."""
    ctl = controller_of(environment)
    if ctl is None:
        raise RuntimeError(
            "no dsserve load test is configured in this Locust process: run with "
            "--dsserve-scenario NAME or through `dsserve loadtest`"
        )
    ctl.pacer_ready.wait()
    assert ctl.pacer is not None
    return ctl.pacer


def attach(environment: Any, ctl: Controller) -> None:
    setattr(environment, _ATTR, ctl)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)
