"""The benchmarks behind the figures in README.md and docs/, each run from the repository root as a module.

Scripts (``python -m bench.<name> --help`` describes each; results go to bench/results/):

- :mod:`bench.foundation`: tiny-model build, `dsserve up` to READY, one request's latency (README);
- :mod:`bench.overhead`: Benchmark A, dsserve against bare vLLM on the same engine (docs/performance.md);
- :mod:`bench.gateway`: Benchmark B, the gateway's capacity on the simulated engine;
- :mod:`bench.streams`: Benchmark C, concurrent open streams and their memory;
- :mod:`bench.frontend_cpu`: the serving path's CPU per request, beside the engine's;
- :mod:`bench.overload`, :mod:`bench.soak`: admission at 2x capacity, and a long steady run
  (docs/reliability.md);
- :mod:`bench.lora`: adapter first-load and request latency (docs/lora.md);
- :mod:`bench.grammar_compile`: what a schema or regex costs xgrammar (docs/agents.md).

What they share, by public name: the server process trees (:mod:`dsserve.devstack`, the same the e2e tests
start), stock ``ray.serve.llm`` as such a server (:mod:`bench.stock`), per-process CPU and memory of a
server's tree (:mod:`bench.harness`), the open-loop load generator and the machine description
(:mod:`bench.openloop`), and one percentile definition (:func:`dsserve.stats.percentile`).
"""

from __future__ import annotations

from pathlib import Path

#: the repository root: profiles, and the default place of bench/results/
REPO = Path(__file__).resolve().parent.parent
