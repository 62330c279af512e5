"""Benchmark A: what dsserve costs over bare vLLM, same model, same engine arguments, same load.

What it measures
    The serving overhead of dsserve (Ray Serve's HTTP proxy, dsserve's ingress, ray.serve.llm's
    LLMServer, their hops) over vLLM's own OpenAI server, with the engine held equal: the tiny model of
    the profile (default deploy/profiles/local-cpu.yaml) is served, one after the other on the same
    machine, by

    - bare vLLM: `vllm serve <model dir> --served-model-name <model.id>` with exactly the engine
      arguments and environment variables dsserve gives that spec (``dsserve.app.llm_config(spec)``:
      ``engine_kwargs`` as CLI flags, ``runtime_env.env_vars`` as environment), and
    - dsserve: `dsserve up <profile>` (one replica, the profile as shipped, or with --set overrides).

    Both see the same open-loop loads (bench.openloop: Poisson arrivals, streamed chat completions,
    ``ignore_eos``, a fixed prompt of about --prompt-tokens tokens and exactly --max-tokens output tokens):

    - calibration (bare vLLM only): a burst of --calibration-requests requests at once; its completed
      output tokens over its makespan are bare vLLM's capacity C (req/s = tokens/s / max_tokens);
    - light: --light-fraction x C req/s for --duration-s (neither server queues: the per-request cost);
    - moderate: --moderate-fraction x C req/s for --duration-s (bare vLLM well inside its capacity);
    - saturation: --saturation-factor x C req/s for --saturation-duration-s (more than the server can
      do: the output tok/s achieved is its capacity; latencies there are queueing, not overhead).

    The same rates are used for every server. Each server is warmed first (sequential requests and a
    small burst), and idle between loads.

How it reports
    A table (rows: load x server; columns offered rate, ok/sent, TTFT p50/p99, E2E p50/p99, output
    tok/s two ways, errors, generator lateness p99, server CPU ms per request) and the comparisons
    against the targets: dsserve's TTFT p50 at the light and moderate loads within 5 ms of bare vLLM's, and
    dsserve's output tok/s at saturation at least 95% of bare vLLM's. Output tok/s is what the server
    achieved, not what was offered: "busy tok/s" is every completed request's output tokens over the
    time from the first send to the last completion (at saturation the server is busy all that time,
    its backlog included, so this is its capacity; the throughput ratio uses it), "out tok/s" counts
    only requests completed inside the send window after --ramp-s. A server that refuses work it cannot
    hold (dsserve answers 503 past its admission limit) shows it as errors, not as latency. A load whose
    generator fell behind its schedule (p99 lateness over 50 ms) is marked invalid: the generator shares
    the machine's cores with the server, so while a load runs it runs at nice -10 (--generator-nice)
    with the heap it imported frozen out of the garbage collector. For servers this script starts it
    also records the CPU seconds each process of the server used during each load (by process title:
    proxy, ingress, LLMServer replica, vLLM engine core and worker, raylet, ...) and its nice value.

Priority
    Ray's raylet starts every worker process at nice 15 (its worker_niceness; $RAY_worker_niceness
    overrides it): Serve's proxy, the replicas and the vLLM engine processes under them. Bare vLLM
    therefore runs at the same nice value by default (--vllm-nice), or on a machine shared with other
    work the comparison would mostly measure who yields the CPU to it. To see what the niceness itself
    does, add a variant: --variant nice0:env:RAY_worker_niceness=0.

JSON
    (default bench/results/overhead.json; --quick: bench/results/overhead-quick.json) holds the
    machine, load averages at start and end, the git commit and uncommitted changes of the dsserve code
    each server ran, engine, model, the exact bare vLLM command, environment and nice value,
    what ray.serve.llm adds to the engine arguments, dsserve's serving settings (proxy,
    stream_batching_interval_ms, Ray's worker niceness, ...), the loads and every summary, with a
    per-second timeline of each load (requests, worst generator lateness, worst TTFT).

Run it alone on the machine, under the stack lock (it starts vLLM and a Ray stack, and stops both):

    flock /tmp/dsserve-stack.lock python -m bench.overhead
    flock /tmp/dsserve-stack.lock python -m bench.overhead --quick
    # dsserve knobs, each as its own dsserve run against the same bare vLLM figures:
    flock /tmp/dsserve-stack.lock python -m bench.overhead \\
        --variant python-proxy:serving.proxy=python --variant sbi0:serving.stream_batching_interval_ms=0

Both servers are started and stopped by dsserve/devstack.py, as the e2e tests start theirs; bare vLLM
through vLLM's own CLI entry point (``dsserve.devstack.VLLM_SHIM`` says why).

The steps, one module each: :mod:`bench.overhead.config` (the command line, the spec, the bare vLLM
command's inputs), :mod:`bench.overhead.runner` (start each server, warm it up, run the loads, stop it) and
:mod:`bench.overhead.report` (the JSON, the table and the comparison with the targets).
"""
