"""The simulated engine's own OpenAI app, for direct mode (``LLMEngine.build_asgi_app``).

In direct mode each engine replica serves its engine's native OpenAI app; for vLLM that is vLLM's
``build_app``. This is the simulator's counterpart: the routes the request pipeline lets through, each
doing what vLLM's app does at the HTTP level (build the request model from the JSON body with vLLM's own
pydantic models, run the engine, answer JSON or server-sent events), so the serving path around it costs
what it costs with a real engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from dsserve.sim.engine import SimulatedEngine

__all__ = ["build_sim_app"]


def _error(message: str, status: int, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "BadRequestError", "param": param, "code": status}}, status_code=status
    )


def build_sim_app(engine: SimulatedEngine) -> FastAPI:
    from pydantic import ValidationError
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    async def generate(request: Request, model_cls: Any, method: str) -> Response:
        try:
            body = model_cls.model_validate_json(await request.body())
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            return _error(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}", 400)
        if body.model != engine.model_id:
            return _error(f"The model `{body.model}` does not exist.", 404, "model")
        gen = getattr(engine, method)(body)
        first = await gen.__anext__()
        if hasattr(first, "error"):  # an ErrorResponse
            await gen.aclose()
            return _error(first.error.message, first.error.code, first.error.param)
        if not isinstance(first, str):  # a whole response
            await gen.aclose()
            return JSONResponse(first.model_dump())

        async def events() -> Any:
            yield first
            async for chunk in gen:
                yield chunk

        return StreamingResponse(events(), media_type="text/event-stream")

    async def chat(request: Request) -> Response:
        return await generate(request, ChatCompletionRequest, "chat")

    async def models(request: Request) -> Response:  # vLLM's app lists its one model here too
        card = {"id": engine.model_id, "object": "model", "owned_by": "dsserve-simulated"}
        return JSONResponse({"object": "list", "data": [card]})

    async def completions(request: Request) -> Response:
        return await generate(request, CompletionRequest, "completions")

    async def tokenize(request: Request) -> Response:
        from dsserve.sim.engine import chat_prompt_tokens, estimate_tokens

        data = await request.json()
        if "messages" in data:
            count = chat_prompt_tokens(list(data.get("messages") or []), data.get("tools"))
        else:
            count = estimate_tokens(str(data.get("prompt", "")))
        return JSONResponse(
            {
                "count": count,
                "max_model_len": engine.timing.max_model_len if engine.timing else None,
                "tokens": list(range(count)),
            }
        )

    async def detokenize(request: Request) -> Response:
        data = await request.json()
        tokens = data.get("tokens") or []
        return JSONResponse({"prompt": " ".join("tok" for _ in tokens)})

    # FastAPI, as vLLM's own app is: ray.serve.llm's direct-streaming LLMServer adds its model route with
    # ``app.get`` (``core/server/llm_server.py`` ``_add_openai_models_retrieve_route``)
    return FastAPI(
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/tokenize", tokenize, methods=["POST"]),
            Route("/detokenize", detokenize, methods=["POST"]),
        ],
    )
