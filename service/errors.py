"""The one error type and its answers, in the native and the Open Inference Protocol formats.

Everything that refuses a request (parsing, validation, limits, the data plane, the API key and
concurrency middleware) raises or sends a :class:`RequestError`; only the rendering depends on
the protocol of the path:

native (``/encode`` …)
    ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`` (FastAPI's shape) or
    ``{"detail": "..."}``, with the error's own status.
Open Inference Protocol (``/v2/…``)
    ``{"error": "<where>: <what>"}``; a request the server cannot read (415, 422) is 400 as the
    protocol asks; 401, 404, 405, 413 and 503 keep their meaning.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from starlette.types import Send

__all__ = ["MAX_ERRORS", "ErrorStyle", "RequestError", "error_style", "send_error"]

MAX_ERRORS = 20  # a bad 10 000-row batch must not produce a 640 000-item error list
ErrorStyle = Literal["native", "oip"]
_OIP_PREFIX = "/v2"


def error_style(path: str) -> ErrorStyle:
    """Which format errors on ``path`` are answered in."""
    return "oip" if path == _OIP_PREFIX or path.startswith(_OIP_PREFIX + "/") else "native"


class RequestError(Exception):
    """A request that cannot be served: the HTTP status and what is wrong, and where.

    Parameters
    ----------
    status_code : int
        The native status (4xx, or 503).
    detail : list of dict or str
        Problems as ``{"loc": [...], "msg": ..., "type": ...}`` items, or one plain message.
    headers : dict, optional
        Extra answer headers (503 gets ``Retry-After: 1`` without asking).
    """

    def __init__(
        self,
        status_code: int,
        detail: list[dict[str, Any]] | str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self._headers = headers or {}

    @classmethod
    def one(cls, status_code: int, loc: list[str | int], msg: str, type_: str) -> RequestError:
        """An error with one located problem."""
        return cls(status_code, [{"loc": loc, "msg": msg, "type": type_}])

    def message(self) -> str:
        """The problems as one line: ``where: what; where: what``."""
        if isinstance(self.detail, str):
            return self.detail
        parts = []
        for item in self.detail:
            where = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
        return "; ".join(parts)

    def status_for(self, style: ErrorStyle) -> int:
        if style == "oip" and self.status_code in (415, 422):
            return 400
        return self.status_code

    def body(self, style: ErrorStyle = "native") -> bytes:
        """The JSON error answer in ``style``."""
        if style == "oip":
            return orjson.dumps({"error": self.message()})
        return orjson.dumps({"detail": self.detail})

    def headers(self) -> dict[str, str]:
        """Headers the answer needs besides its content type: 503 asks to retry shortly."""
        if self.status_code == 503:
            return {"Retry-After": "1", **self._headers}
        return self._headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode()) for k, v in self.headers().items()]


async def send_error(send: Send, error: RequestError, style: ErrorStyle) -> None:
    """Send ``error`` as a complete ASGI answer."""
    body = error.body(style)
    await send(
        {
            "type": "http.response.start",
            "status": error.status_for(style),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *error.raw_headers(),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
