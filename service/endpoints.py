"""The inference endpoints: one ASGI path for every protocol, in production and in tests.

FastAPI's routing, dependency injection and request objects cost more than parsing, running
the model and serialising a single vector together (py-spy under wrk), so the ``POST`` paths of
the table of operations are answered here, below the framework: the native endpoints
(:mod:`service.protocols.native`) and the Open Inference Protocol's ``infer``
(:mod:`service.protocols.oip`). The body is read once, within the size limit, errors are
answered in the path's format, and what was served goes to the metrics through
``scope["state"]``. The OpenAPI document describes these paths from the same table
(:mod:`service.openapi`). Everything else passes through to FastAPI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from time import perf_counter

from starlette.types import ASGIApp, Receive, Scope, Send

from service.admission import Admission
from service.connections import CUT_STATE_KEY
from service.dataplane import DataPlane, Inference
from service.errors import RequestError, error_style, send_error
from service.operations import NATIVE, OIP_INFER
from service.protocols import QUERY_KEY, Answer, BodyReader, Headers, native, oip, parse_length

__all__ = ["InferenceEndpoints", "read_limited", "server_timing"]

Handler = Callable[[DataPlane, Headers, BodyReader], Awaitable[Answer]]
_HEADERS = frozenset(
    {b"content-type", b"content-length", b"accept", b"inference-header-content-length"}
)


# The native paths' handlers, made once (a request only looks its path up).
_NATIVE: dict[str, Handler] = {path: partial(native.serve, op) for path, op in NATIVE.items()}


def _handler(path: str) -> Handler | None:
    handler = _NATIVE.get(path)
    if handler is not None:
        return handler
    match = OIP_INFER.fullmatch(path)
    if match is not None:
        return partial(oip.serve, match["model"], match["version"])
    return None


class InferenceEndpoints:
    """Answers the ``POST`` paths of :mod:`service.operations`; passes everything else on.

    Each request reserves its memory from ``admission`` before its body is read, and takes a
    slot only once the body has arrived (:mod:`service.admission`).
    """

    def __init__(
        self, app: ASGIApp, dataplane: DataPlane, body_limit: int, admission: Admission
    ) -> None:
        self.app = app
        self.dataplane = dataplane
        self.body_limit = body_limit
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = _handler(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            not_allowed = RequestError(405, "Method Not Allowed", {"Allow": "POST"})
            await send_error(send, not_allowed, error_style(scope["path"]))
            return
        headers: Headers = {}
        for name, value in scope["headers"]:
            if name in _HEADERS:
                headers[name] = value.decode("latin-1")
        if scope["query_string"]:
            headers[QUERY_KEY] = scope["query_string"].decode("latin-1")
        admission = self.admission
        declared = headers.get(b"content-length")
        size = None if declared is None else parse_length(declared)
        reserved = 0  # bytes of memory reserved in admission
        slot = False
        received = 0.0  # when the whole body had arrived (perf_counter)

        async def read_body() -> bytes:
            nonlocal reserved, slot, received
            if size is None:  # no length declared (chunked): reserve as the body comes
                growth = _Growth(admission, reserved)
                try:
                    body = await read_limited(
                        _chunks(receive, scope, growth), None, self.body_limit
                    )
                finally:
                    reserved += growth.reserved
            else:
                body = await read_limited(_chunks(receive, scope, None), size, self.body_limit)
            admission.take_slot()
            slot = True
            received = perf_counter()
            return body

        error: RequestError | None = None
        try:
            try:
                if size is not None and size > self.body_limit:
                    raise _too_large(self.body_limit)
                reserved = admission.reserve(size or 0)
                answer = await handler(self.dataplane, headers, read_body)
                answered = perf_counter()
            except RequestError as exc:
                # Answered below, without the traceback: its frames may hold a parser's
                # document, which must not outlive the request while the answer is being sent.
                error = exc.with_traceback(None)
            if error is not None:
                await send_error(send, error, error_style(scope["path"]))
                return
            inference = answer.inference
            state = scope.setdefault("state", {})
            state["served"] = inference.served
            state["vectors"] = inference.rows
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", answer.media_type.encode()),
                        (b"content-length", str(len(answer.payload)).encode()),
                        (b"server-timing", server_timing(received, inference, answered)),
                        *answer.headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": answer.payload})
        finally:
            if slot:
                admission.give_slot()
            if reserved:
                admission.release(reserved)


_SERVER_TIMING = b"parse;dur=%.3f, queue;dur=%.3f, model;dur=%.3f, serialize;dur=%.3f"


def server_timing(received: float, inference: Inference, answered: float) -> bytes:
    """The ``Server-Timing`` header of one answer: milliseconds spent in each stage.

    ``parse``: from the whole body's arrival until the rows were ready (parsing, and checking
    the numbers when not batched); ``queue``: waiting for the requests of the same event-loop
    turn to join its batch (0 when computed alone); ``model``: the forward pass and the scores
    (of the whole batch, for a batched request); ``serialize``: from then, or from the batched
    request going on, to the answer's bytes. Reading the body and sending are not included.
    """
    queued = inference.queued or inference.started
    return _SERVER_TIMING % (
        (queued - received) * 1000,
        (inference.started - queued) * 1000,
        (inference.finished - inference.started) * 1000,
        (answered - (inference.resumed or inference.finished)) * 1000,
    )


class _Growth:
    """Memory reserved for a body of undeclared length, chunk by chunk, beyond ``held``."""

    def __init__(self, admission: Admission, held: int) -> None:
        self.admission = admission
        self.held = held
        self.reserved = 0

    def add(self, body_bytes: int) -> None:
        self.reserved += self.admission.grow(body_bytes, self.held + self.reserved)


async def _chunks(receive: Receive, scope: Scope, growth: _Growth | None) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            cut: RequestError | None = scope.get("state", {}).get(CUT_STATE_KEY)
            if cut is not None:  # cut by service.connections (too slow), which answered it
                raise cut
            raise RequestError.one(400, ["body"], "Client disconnected", "disconnected")
        body: bytes = message.get("body", b"")
        if body:
            if growth is not None:
                growth.add(len(body))
            yield body
        if not message.get("more_body", False):
            return


def _too_large(limit: int) -> RequestError:
    return RequestError.one(
        413, ["body"], f"Request body exceeds the limit of {limit} bytes", "body_too_large"
    )


async def read_limited(chunks: AsyncIterator[bytes], declared: int | None, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it exceeds ``limit`` bytes.

    Checked against the declared Content-Length before reading and again while streaming, so
    an oversized body is never buffered in full.
    """
    if declared is not None and declared > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)
