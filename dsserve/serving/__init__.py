"""The request path: everything between the client's HTTP request and the engine.

One request pipeline (:mod:`dsserve.serving.pipeline`) runs wherever a request lands:

- **direct** (the default for one model): HAProxy reaches the engine replicas themselves, and each
  ``LLMServer`` replica serves vLLM's own OpenAI app behind the pipeline (:mod:`.direct`);
- **ingress**: HAProxy reaches dsserve's ingress replicas (:mod:`.ingress`, on ray.serve.llm's
  ``OpenAiIngress``), which run the pipeline and hand requests to the engine replicas over Serve handles
  (:mod:`.server`). For several models or LoRA adapters.

Modules:

- ``pipeline``   the ASGI middleware every route passes through: route table, API keys, rate limit,
                 body limits, admission, request shape, error mapping, metrics
- ``errors``     the one place OpenAI-shaped error bodies are made, and the mapper for engine errors
- ``auth``       API keys (env var, rotating key file) and per-key token buckets
- ``admission``  the admission gate: bounded in-flight requests, fast 503 past it
- ``metrics``    dsserve_* request metrics
- ``layout``     the live parallel layout in GET /v1/models
- ``routing``    Ray's prefix-affinity router with two upstream faults fixed
- ``server``     dsserve's ``LLMServer`` replica class (first streamed chunk at once, local LoRA)
- ``lora_server`` local LoRA adapters for ``LLMServer``
- ``ingress``    the separate-ingress mode's ingress class
- ``direct``     the direct mode's replica class and builder
"""
