"""The simulated engine: vLLM's continuous batching with the planner's step times, and no GPU.

It exists so the whole serving path (proxy, ingress, routing, admission, streaming, metrics, load tests)
can be exercised at production rates on a laptop or in CI. It plugs into ``ray.serve.llm`` through the
engine extension point (``RAYLLM_VLLM_ENGINE_CLS``, see :mod:`dsserve.sim.engine`) and is selected by
``engine.backend: simulated`` in a deployment spec.

- :mod:`dsserve.sim.timing`: step times and KV capacity for the spec's model, layout and accelerator,
  from :mod:`dsserve.planner` (so a ``sim-h800x8-*`` profile behaves like its GPU twin's plan);
- :mod:`dsserve.sim.scheduler`: vLLM v1's scheduling rules (token budget, ``max_num_seqs``, chunked
  prefill, KV blocks, preemption by recompute), clock-free so it is unit-testable;
- :mod:`dsserve.sim.engine`: the ``LLMEngine`` that runs the scheduler on the event loop and speaks
  OpenAI (streamed and not, ``usage``, ``stop``, ``max_tokens``);
- :mod:`dsserve.sim.answer`: what a chat request gets: text, a JSON document (``response_format``), a tool
  call (``tools``/``tool_choice``, as the twin's vLLM parser would return it) or vLLM's own 400;
- :mod:`dsserve.sim.schema_instance`: a minimal valid instance of a JSON schema, for those answers;
- :mod:`dsserve.sim.metrics`: the same ``vllm:*`` metrics the real engine exports through Ray;
- :mod:`dsserve.sim.kv_transfer`: the KV handoff between the prefill and decode pools of a disaggregated
  deployment, with vLLM's NIXL transfer metrics.

Everything it produces says it is simulated: the model card, the ``system_fingerprint`` of every
response, the ``simulated="true"`` label of ``vllm:cache_config_info`` and the CLI's banner.
"""

SIMULATED_ENGINE_CLS = "dsserve.sim.engine:SimulatedEngine"
SIM_CONFIG_KEY = "dsserve_simulator"  # key of LLMConfig.experimental_configs holding the simulator's inputs
#: key of a decode pool's experimental_configs holding the modelled KV transfer (dsserve/sim/kv_transfer.py)
SIM_KV_TRANSFER_KEY = "dsserve_kv_transfer"

__all__ = ["SIMULATED_ENGINE_CLS", "SIM_CONFIG_KEY", "SIM_KV_TRANSFER_KEY"]
