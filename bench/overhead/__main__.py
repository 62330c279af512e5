"""``python -m bench.overhead``: Benchmark A, in three steps (config, runner, report); ``--help`` says what it does."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from bench.overhead.config import load_config
from bench.overhead.report import finish, new_report
from bench.overhead.runner import run_bare_vllm, run_dsserve


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through the `finally`s that stop the servers


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    config = load_config(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per warmup request
    report = new_report(config, argv)
    print(
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, load average "
        f"{report['loadavg_start']}; engine: real vLLM CPU {report['engine']['vllm']}; model {config.model}",
        flush=True,
    )
    loads = run_bare_vllm(config, report)
    run_dsserve(config, loads, report)
    finish(config, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
