"""Protocols at the edge: each translates bytes ⇄ ``(model, signature, array, outputs)``.

:mod:`service.protocols.native` serves ``/encode``, ``/decode`` and ``/reconstruct`` (JSON or
``.npy``); :mod:`service.protocols.oip` serves the Open Inference Protocol's ``infer``. Both
hand the arrays to the same :class:`service.dataplane.DataPlane`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from service.dataplane import Inference

__all__ = ["QUERY_KEY", "Answer", "BodyReader", "Headers", "parse_length"]

# The request headers a protocol may read, lower-case names, latin-1 values; the query string,
# if any, under QUERY_KEY (a pseudo-header, as HTTP/2 carries the path).
Headers = dict[bytes, str]
QUERY_KEY = b":query"
# Reads the whole body within the size limit (413 beyond it); called at most once.
BodyReader = Callable[[], Awaitable[bytes]]


def parse_length(value: str) -> int | None:
    """A length header's value as an int, or None unless it is ASCII digits only.

    ``str.isdigit`` alone also accepts digits such as '²' that ``int`` refuses.
    """
    return int(value) if value.isascii() and value.isdigit() else None


@dataclass(slots=True)  # one per request: not frozen, whose __init__ costs more
class Answer:
    """A 200 answer: its bytes, media type, extra headers, and what the data plane did."""

    payload: bytes
    media_type: str
    inference: Inference
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
