"""The client's exception tree.

::

    DigitcodeError
    ├── TransportError        the service could not be reached (connection refused, timeout)
    └── APIError              the service answered with an error status
        ├── ClientError       4xx: the request was wrong; ``detail`` says what and where
        └── ServerError       5xx: the service failed or is not ready
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "ClientError",
    "DigitcodeError",
    "ServerError",
    "TransportError",
    "describe_detail",
    "shift_rows",
]


class DigitcodeError(Exception):
    """Base class of every error the client raises."""


class TransportError(DigitcodeError):
    """The request did not get an HTTP answer."""


class APIError(DigitcodeError):
    """The service answered with status >= 400.

    Attributes
    ----------
    status_code : int
    detail : list of dict or str
        The service's ``detail`` field: for validation errors, items with ``loc`` and ``msg``.
    """

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"HTTP {status_code}: {describe_detail(detail)}")


class ClientError(APIError):
    """4xx: the request was refused."""


class ServerError(APIError):
    """5xx: the service failed or is not ready."""


_SHOWN = 3  # errors spelled out in a message; the rest are counted


def describe_detail(detail: Any) -> str:
    """One line from an error ``detail``: ``vectors[3][17]: Input should be ...``."""
    if isinstance(detail, list):
        parts = []
        for item in detail[:_SHOWN]:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = [p for p in item.get("loc", []) if p != "body"]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
            parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
        more = len(detail) - _SHOWN
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return str(detail)


def shift_rows(detail: Any, offset: int) -> Any:
    """``detail`` with row numbers counted from the whole input, not from its batch.

    The row is the first integer in each ``loc`` (``["body", "vectors", 3, 17]`` or
    ``["body", 3, 17]``); messages never repeat it, so they are left as the service wrote them.
    """
    if not offset or not isinstance(detail, list):
        return detail
    shifted = []
    for item in detail:
        if isinstance(item, dict) and isinstance(item.get("loc"), list):
            loc = list(item["loc"])
            rows = [i for i, p in enumerate(loc) if isinstance(p, int)]
            if rows:
                loc[rows[0]] += offset
                item = {**item, "loc": loc}
        shifted.append(item)
    return shifted
