"""A direct ASGI path for ``POST /encode``, ``/decode`` and ``/reconstruct``.

FastAPI's routing, dependency solving and per-request objects cost more than parsing,
running the model and serialising a single vector together (py-spy under wrk: the endpoint
was about a third of the time). This middleware answers those three paths itself through the
same :func:`service.exchange.answer` the FastAPI routes use, so behaviour, validation and
errors are identical; the routes remain the documented interface (OpenAPI) and serve the
paths when the fast path is off. Everything else passes through untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from service.exchange import OPERATIONS, answer, check_content_type, read_limited
from service.parsing import RequestError

__all__ = ["InferenceFastPath"]


class InferenceFastPath:
    """Serves the inference endpoints without the framework's routing layers."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = OPERATIONS.get(scope["path"]) if scope["type"] == "http" else None
        if operation is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {}
        for name, value in scope["headers"]:
            if name in (b"content-type", b"content-length", b"accept"):
                headers[name] = value.decode("latin-1")
        settings = self.state.settings
        try:
            model = self.state.model
            if model is None:
                raise RequestError(503, "Model not loaded yet")
            media_type = check_content_type(headers.get(b"content-type", ""))
            body = await read_limited(
                _chunks(receive), headers.get(b"content-length"), settings.body_limit
            )
            payload, answer_type, rows = answer(
                operation,
                model,
                media_type,
                headers.get(b"accept", ""),
                body,
                settings.max_batch,
            )
            status = 200
            extra: list[tuple[bytes, bytes]] = []
            scope.setdefault("state", {})["vectors"] = rows
        except RequestError as exc:
            payload, answer_type, status = exc.body(), "application/json", exc.status_code
            extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", answer_type.encode()),
                    (b"content-length", str(len(payload)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError.one(400, ["body"], "Client disconnected", "disconnected")
        body: bytes = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return
