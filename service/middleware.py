"""Pure ASGI middleware (no body buffering): API key and concurrency limit.

Both exempt the probes of :data:`service.operations.PROBE_PATHS`; the API key also exempts the
pages of :data:`service.operations.PAGE_PATHS` (the docs and the explorer). Both answer in the
path's error format (:mod:`service.errors`).
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from service.admission import Admission
from service.errors import RequestError, error_style, send_error
from service.operations import PAGE_PATHS, PROBE_PATHS

__all__ = ["API_KEY_HEADER", "ApiKeyMiddleware", "ConcurrencyLimitMiddleware"]

API_KEY_HEADER = "X-API-Key"
# The probes, and the pages where a browser user enters the key, which cannot need it.
_OPEN_PATHS = PROBE_PATHS | PAGE_PATHS


class ApiKeyMiddleware:
    """Requires ``X-API-Key`` on every path except the probes and pages; compares in constant time.

    The key is never logged or echoed.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                given = value
                break
        if not hmac.compare_digest(given, self.key):
            what = "Invalid" if given else "Missing"
            error = RequestError(
                401,
                f"{what} API key: send it in the {API_KEY_HEADER} header",
                {"WWW-Authenticate": f'APIKey header="{API_KEY_HEADER}"'},
            )
            await send_error(send, error, error_style(scope["path"]))
            return
        await self.app(scope, receive, send)


class ConcurrencyLimitMiddleware:
    """Answers 503 at once when all of the worker's slots (:class:`Admission`) are taken.

    Queueing without bound only turns overload into timeouts for everyone; a quick 503 with
    ``Retry-After`` lets clients and load balancers back off. Probes are never refused. The
    inference endpoints, outside this middleware, take their slot after reading the body.
    """

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            self.admission.take_slot()
        except RequestError as error:
            await send_error(send, error, error_style(scope["path"]))
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.give_slot()
