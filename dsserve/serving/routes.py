"""The routes the API serves, and what the request pipeline does on each.

One table for both serving modes. Anything not in it is an OpenAI 404, whatever the app below would
answer: vLLM's own app (direct mode) also mounts ``/metrics``, ``/v1/responses``, ``/invocations``,
``/scale_elastic_ep`` and more, and ray.serve.llm's ingress (ingress mode) mounts FastAPI's ``/docs``.
Those stay unreachable.

Route kinds:

- ``generate``: chat and text completions. Full pipeline; the request's weight (prompts x ``n``)
  counts against admission and the key's rate limit; token timing in the metrics.
- ``model_json``: a JSON body naming a served model (``/tokenize``, ``/detokenize``). The same limits,
  weight 1.
- ``unsupported``: the OpenAI routes ray.serve.llm adds for other kinds of model (embeddings, scoring,
  transcription). DeepSeek chat models serve none of them: after the key and rate-limit checks the
  answer is a 404 that says so, the same in both modes.
- ``models``: ``GET /v1/models`` and ``GET /v1/models/{id}``, answered by the pipeline's model directory.
- ``openapi``: ``GET /openapi.json``, dsserve's own API document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Route", "ROUTES", "MODEL_PREFIX", "match", "route_label"]

Kind = Literal["generate", "model_json", "unsupported", "models", "model_card", "openapi"]


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    kind: Kind
    #: what the route is for, in error messages ("embeddings")
    what: str = ""


ROUTES: dict[str, Route] = {
    r.path: r
    for r in (
        Route("/v1/chat/completions", "POST", "generate", "chat completions"),
        Route("/v1/completions", "POST", "generate", "text completions"),
        Route("/tokenize", "POST", "model_json", "tokenization"),
        Route("/detokenize", "POST", "model_json", "detokenization"),
        Route("/v1/embeddings", "POST", "unsupported", "embeddings"),
        Route("/v1/score", "POST", "unsupported", "scoring"),
        Route("/v1/audio/transcriptions", "POST", "unsupported", "audio transcription"),
        Route("/v1/models", "GET", "models"),
        Route("/openapi.json", "GET", "openapi"),
    )
}
MODEL_PREFIX = "/v1/models/"
_MODEL_CARD = Route(MODEL_PREFIX + "{model}", "GET", "model_card")

#: The paths named in a 404 for an unknown route.
SERVED_PATHS = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize")


def match(path: str) -> Route | None:
    """The route serving ``path`` (method not checked), or None."""
    route = ROUTES.get(path)
    if route is None and path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX):
        return _MODEL_CARD
    return route


def route_label(route: Route | None) -> str:
    """The bounded ``route`` label of a metric: the route's path, or ``other``."""
    if route is None:
        return "other"
    return route.path
