"""Pure ASGI middleware (no body buffering): API key and concurrency limit."""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "API_KEY_HEADER",
    "PROBE_PATHS",
    "ApiKeyMiddleware",
    "ConcurrencyLimitMiddleware",
]

API_KEY_HEADER = "X-API-Key"
# Orchestrators must reach these without credentials, and even when the service is saturated.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


async def _send_json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """Requires ``X-API-Key`` on every path except the probes; compares in constant time.

    The key is never logged or echoed.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                given = value
                break
        if not hmac.compare_digest(given, self.key):
            what = "Invalid" if given else "Missing"
            await _send_json(
                send,
                401,
                f"{what} API key: send it in the {API_KEY_HEADER} header",
                [(b"www-authenticate", f'APIKey header="{API_KEY_HEADER}"'.encode())],
            )
            return
        await self.app(scope, receive, send)


class ConcurrencyLimitMiddleware:
    """Answers 503 at once when ``limit`` requests are already in flight in this worker.

    Queueing without bound only turns overload into timeouts for everyone; a quick 503 with
    ``Retry-After`` lets clients and load balancers back off. Probes are never refused.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await _send_json(
                send,
                503,
                f"Server busy: {self.in_flight} requests in flight (limit {self.limit}); "
                "retry shortly",
                [(b"retry-after", b"1")],
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
