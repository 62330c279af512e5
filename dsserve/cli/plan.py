"""`dsserve plan PROFILE...`: does a deployment fit, how fast is it, does it meet its SLO (no GPU needed)."""

from __future__ import annotations

import argparse
import json
import sys

from dsserve.cli.base import Command
from dsserve.errors import ExitCode, UsageError

__all__ = ["PlanCommand"]


class PlanCommand(Command):
    name = "plan"
    help = "capacity and SLO plan: does a profile fit, how fast is it, does it meet its SLO"
    description = (
        "Plan a deployment from its profile without a GPU: per-GPU memory (weights, KV cache, reserves, as "
        "vLLM splits them), prefill/decode times, the SLO at a request mix with a queueing estimate, and the "
        "nearest layouts that fit. Exit status: 0 fits and meets the SLO, 1 does not, 2 bad input. See "
        "docs/planner.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        p = parser
        p.add_argument("profiles", nargs="*", metavar="PROFILE", help="deployment spec YAML(s)")
        g = p.add_argument_group("request mix (default: the profile's slo section)")
        g.add_argument("--qps", type=float, help="arrival rate, requests per second (Poisson)")
        g.add_argument("--input-tokens", help="prompt tokens: N, LO:HI (uniform) or exp:MEAN")
        g.add_argument("--output-tokens", help="output tokens: N, LO:HI (uniform) or exp:MEAN")
        g.add_argument("--metric", choices=["ttft", "e2e", "itl"], help="latency the SLO bounds")
        g.add_argument("--percentile", type=float, help="SLO percentile, e.g. 99")
        g.add_argument("--threshold-ms", type=float, help="SLO bound in milliseconds")
        # each flag but --hf-config is a key of dsserve.planner.plan.OVERRIDE_PATHS, which names its spec field
        g = p.add_argument_group("what-if overrides (validated like the profile)")
        g.add_argument("--architecture", help="catalog model key, e.g. deepseek-v3")
        g.add_argument("--hf-config", metavar="PATH", help="plan the model of this local config.json instead")
        g.add_argument("--accelerator", help="h800, h100, h200, a100-80g or cpu")
        g.add_argument("--gpus-per-node", type=int, help="hardware.gpus_per_node")
        g.add_argument("--nodes", type=int, help="hardware.nodes")
        g.add_argument("--tp", type=int, help="engine.tensor_parallel_size")
        g.add_argument("--pp", type=int, help="engine.pipeline_parallel_size")
        g.add_argument(
            "--dp", type=int, help="engine.data_parallel_size (DP attention; each DP rank is one Serve replica)"
        )
        g.add_argument(
            "--ep", action=argparse.BooleanOptionalAction, default=None, help="engine.enable_expert_parallel"
        )
        g.add_argument("--quantization", help="fp8, awq, gptq, compressed-tensors, bitsandbytes or none")
        g.add_argument("--kv-cache-dtype", help="auto or fp8")
        g.add_argument("--max-model-len", type=int, help="engine.max_model_len")
        g.add_argument("--max-num-seqs", type=int, help="engine.max_num_seqs")
        g.add_argument("--max-num-batched-tokens", type=int, help="engine.max_num_batched_tokens")
        g.add_argument("--gpu-memory-utilization", type=float, help="engine.gpu_memory_utilization")
        g.add_argument("--replicas", type=int, help="serving.replicas")
        g.add_argument("--max-ongoing-requests", type=int, help="serving.max_ongoing_requests")
        g = p.add_argument_group("output")
        g.add_argument("--json", action="store_true", help="print the plan as JSON")
        g.add_argument(
            "--no-alternatives",
            dest="alternatives",
            action="store_false",
            help="skip the search for nearest fitting layouts",
        )
        g.add_argument(
            "--sweep",
            action="store_true",
            help="print the docs/planner.md QPS table (largest QPS under p99 500 ms) for the profiles",
        )
        g.add_argument("--target-qps", type=float, default=1200.0, help="QPS the --sweep table tests (default 1200)")
        g.add_argument(
            "--published",
            action="store_true",
            help="print the predicted/published comparison table of docs/planner.md",
        )

    def run(self, args: argparse.Namespace) -> int:
        """0 when every profile fits and meets its SLO, 1 when one does not; bad input raises (exit 2)."""
        if args.published:
            from dsserve.planner.published import published_table

            sys.stdout.write(published_table())
            return ExitCode.OK
        if not args.profiles:
            raise UsageError(
                "dsserve plan: no PROFILE given; pass one or more deployment specs, e.g. "
                "deploy/profiles/h800x8-deepseek-llm-67b-tp8.yaml (or --published)"
            )
        from dsserve.planner.plan import OVERRIDE_PATHS

        overrides = {k: getattr(args, k) for k in OVERRIDE_PATHS}
        if args.sweep:
            from dsserve.planner.sweep import sweep_table

            sys.stdout.write(sweep_table(args.profiles, target_qps=args.target_qps, overrides=overrides))
            return ExitCode.OK
        from dsserve.planner import plan_profile, plan_to_dict, render_text

        mix_args = {
            "qps": args.qps,
            "input_tokens": args.input_tokens,
            "output_tokens": args.output_tokens,
            "metric": args.metric,
            "percentile": args.percentile,
            "threshold_ms": args.threshold_ms,
        }
        plans = [
            plan_profile(
                p, overrides=overrides, hf_config=args.hf_config, mix_args=mix_args, alternatives=args.alternatives
            )
            for p in args.profiles
        ]
        if args.json:
            data = [plan_to_dict(p) for p in plans]
            print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
        else:
            sys.stdout.write("\n".join(render_text(p) for p in plans))
        return ExitCode.OK if all(p.ok for p in plans) else ExitCode.NOT_MET
