"""OpenAI-shaped errors: the one place error bodies are made, and the mapper for everyone else's.

Every refusal the request pipeline makes is a :class:`ClientError` (or a subclass) raised where the
problem is found and turned into ``{"error": {"message", "type", "param", "code"}}`` with its status in
one place (:meth:`ClientError.body`). Errors that come back from below - vLLM's own OpenAI app, Ray
Serve (plain-text 503 on backpressure, 404 on a stray path), ray.serve.llm's ingress - pass through
:func:`normalize_error`, so clients see one shape whatever produced the error::

    ClientError                 4xx/503 the client can act on
    ├── AuthError               401 missing or wrong API key
    ├── RateLimited             429 past the key's token bucket (Retry-After)
    ├── BodyTooLarge            413 body over api.max_body_bytes
    ├── InvalidRequest          400 malformed JSON or a wrong field (names the field)
    ├── NotFound                404 unknown model, route or a route this model does not serve
    ├── MethodNotAllowed        405
    └── Unavailable             503 at capacity or no engine replica (Retry-After)

Bodies never carry a traceback, a process id, an address or a file path: a 5xx from below keeps its
status and gets a generic message, and the original goes to the replica's log.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

__all__ = [
    "ENGINE_RETRY_AFTER_S",
    "AuthError",
    "BodyTooLarge",
    "ClientError",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "RateLimited",
    "Unavailable",
    "engine_down_error",
    "error_body",
    "normalize_error",
    "overloaded",
]

log = logging.getLogger("ray.serve")

#: OpenAI's error ``type`` for each status a client can cause.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "invalid_request_error",
    503: "service_unavailable_error",
}

INTERNAL_MESSAGE = "The server could not complete the request (an internal error; the replica's log has the details)."


def _error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def printable(text: str) -> str:
    """Text safe to put in a JSON body: a lone surrogate the client sent would fail the encoding."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> bytes:
    """The JSON bytes of an OpenAI error."""
    body = {
        "error": {
            "message": printable(message),
            "type": _error_type(status),
            "param": None if param is None else printable(param),
            "code": code,
        }
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


class ClientError(Exception):
    """A request the server refuses, with what the client should do about it."""

    status = 400
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status

    def body(self) -> bytes:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def response(self) -> Any:
        """A Starlette response (for FastAPI handlers; the pipeline sends raw ASGI messages)."""
        from starlette.responses import Response

        return Response(self.body(), status_code=self.status, media_type="application/json", headers=self.headers)

    async def send(self, send: Any) -> None:
        """Answer with this error over a raw ASGI ``send``."""
        body = self.body()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


class AuthError(ClientError):
    status = 401
    default_code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__(
            "Missing or invalid API key; send `Authorization: Bearer <key>`.", headers={"WWW-Authenticate": "Bearer"}
        )


class RateLimited(ClientError):
    status = 429
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class BodyTooLarge(ClientError):
    status = 413
    default_code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than this server accepts ({limit} bytes, "
            "api.max_body_bytes); shorten the prompt or raise the limit."
        )


class InvalidRequest(ClientError):
    status = 400
    default_code = "invalid_parameter"


class NotFound(ClientError):
    status = 404


class MethodNotAllowed(ClientError):
    status = 405
    default_code = "method_not_allowed"


class Unavailable(ClientError):
    """503 with Retry-After: the server is full, or the model has no engine replica running."""

    status = 503

    def __init__(self, message: str, *, retry_after_s: int, code: str) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


def overloaded(why: str) -> Unavailable:
    return Unavailable(f"The server is at capacity: {why}. Retry after 1 second.", retry_after_s=1, code="overloaded")


#: Seconds a client should wait when the engine died: Serve replaces its replica in about 40-70 s here.
ENGINE_RETRY_AFTER_S = 5


def engine_down_error(why: str = "its engine failed and Serve is replacing the replica") -> Unavailable:
    return Unavailable(
        f"The model is temporarily unavailable: {why}. Retry after {ENGINE_RETRY_AFTER_S} seconds.",
        retry_after_s=ENGINE_RETRY_AFTER_S,
        code="engine_unavailable",
    )


# -- mapping errors made below the pipeline ---------------------------------------------------------

# ray.serve.llm wraps engine messages as "Message: <text> (Request ID: <id>), Internal exception: ..."
_UPSTREAM_WRAPPED = re.compile(r"^Message: (?P<msg>.*?)(?: \(Request ID: [^)]*\))?, Internal exception:", re.S)
_PARAM_TAG = re.compile(r"\(parameter=(?P<p>[A-Za-z_]+)")
# vLLM's sampling-parameter checks start with the field's name: "n must be at least 1, got 0."
_LEADING_FIELD = re.compile(r"^(?P<p>[a-z_]+) (?:must|cannot|should|is|contains)\b")
# Anything that looks like a traceback, a source path or an address must not reach a client.
_LEAKY = re.compile(r"Traceback \(most recent call last\)|File \"|/[\w.-]+/[\w./-]+\.py|\bpid=|\bip=", re.I)


def clean_upstream_message(message: str) -> str:
    """An engine message without ray.serve.llm's wrapper, on one line, at most 500 characters."""
    m = _UPSTREAM_WRAPPED.match(message)
    text = m.group("msg") if m else message
    text = text.strip().splitlines()[0] if text.strip() else text
    return text[:500]


def param_of(message: str, fields: Any = ()) -> str | None:
    """The request field an engine error names: its ``(parameter=...)`` tag, else a leading field name."""
    m = _PARAM_TAG.search(message)
    if m:
        return m.group("p")
    m = _LEADING_FIELD.match(message)
    return m.group("p") if m and m.group("p") in fields else None


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def normalize_error(status: int, body: bytes, *, where: str = "", fields: Any = ()) -> bytes:
    """An error body from below (vLLM, Serve, FastAPI, ray.serve.llm) in the one OpenAI shape.

    4xx keep their message (cleaned of wrappers, first line only) and the field they name; a message
    that looks like it carries internals is replaced. 5xx keep their status, and their message is
    generic except for a 503 that says why (backpressure). The original of a replaced message is logged.
    ``fields`` are the request model's, for naming the field a message starts with ("n must be ...").
    """
    message, param, code = "", None, None
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            param = err.get("param") if isinstance(err.get("param"), str) else None
            code = err.get("code") if isinstance(err.get("code"), str) else None
        elif isinstance(err, str):
            message = err
        elif "detail" in data:  # FastAPI / Starlette
            detail = data["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)[:300]
        elif "message" in data:  # vLLM's ErrorResponse without the "error" wrapper
            message = str(data.get("message") or "")
    elif body:
        message = body.decode("utf-8", "replace")
    message = clean_upstream_message(message) if message else ""
    if status >= 500 and status != 503 or _LEAKY.search(message):
        if message:
            log.warning("dsserve: %s answered %d: %s", where or "the server", status, message[:2000])
        message = INTERNAL_MESSAGE if status >= 500 else f"{_reason(status)}: the request was refused."
        param = None
    elif not message:
        message = f"{_reason(status)}."
    if status == 503 and code is None:
        code = "overloaded"
    if param is None and status < 500:
        param = param_of(message, fields)
    return error_body(status, message, param=param, code=code)
