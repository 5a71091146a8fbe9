"""One inference exchange, independent of the web framework: body bytes in, answer bytes out.

Both the FastAPI routes (:mod:`service.routers.inference`) and the ASGI fast path
(:mod:`service.fastpath`) serve requests through :func:`answer` and :func:`read_limited`, so
validation, formats and errors are defined once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.model import Autoencoder
from service.parsing import (
    CODES,
    JSON_TYPE,
    NPY_TYPE,
    VECTORS,
    MatrixSpec,
    RequestError,
    dump_json,
    dump_npy,
    parse_json,
    parse_npy,
)

__all__ = ["OPERATIONS", "Operation", "answer", "check_content_type", "read_limited"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Operation:
    """What one endpoint reads, and how it turns the rows into its JSON and ``.npy`` answers."""

    spec: MatrixSpec
    run: Callable[[Autoencoder, Array], tuple[dict[str, Any], Array]]


def _encode(model: Autoencoder, X: Array) -> tuple[dict[str, Any], Array]:
    Z = model.encode(X)
    return {"latent": Z}, Z


def _decode(model: Autoencoder, Z: Array) -> tuple[dict[str, Any], Array]:
    X = model.decode(Z)
    return {"vectors": X}, X


def _reconstruct(model: Autoencoder, X: Array) -> tuple[dict[str, Any], Array]:
    X_hat, errors = model.reconstruct(X)
    return {"vectors": X_hat, "errors": errors}, np.column_stack([X_hat, errors])


OPERATIONS: dict[str, Operation] = {
    "/encode": Operation(VECTORS, _encode),
    "/decode": Operation(CODES, _decode),
    "/reconstruct": Operation(VECTORS, _reconstruct),
}


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def check_content_type(content_type: str) -> str:
    """The request's media type, or 415 unless it is JSON or ``.npy``."""
    media = _media_type(content_type)
    if media not in (JSON_TYPE, NPY_TYPE):
        raise RequestError.one(
            415,
            ["header", "content-type"],
            f"Content-Type must be {JSON_TYPE} or {NPY_TYPE} (got {content_type or 'none'})",
            "unsupported_media_type",
        )
    return media


async def read_limited(
    chunks: AsyncIterator[bytes], declared_length: str | None, limit: int
) -> bytes:
    """The whole body, refusing (413) as soon as it exceeds ``limit`` bytes.

    Checked against Content-Length before reading and again while streaming, so an oversized
    body is never buffered in full.
    """
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _too_large(limit: int) -> RequestError:
    return RequestError.one(
        413, ["body"], f"Request body exceeds the limit of {limit} bytes", "body_too_large"
    )


def answer(
    operation: Operation,
    model: Autoencoder,
    media_type: str,
    accept: str,
    body: bytes,
    max_rows: int,
) -> tuple[bytes, str, int]:
    """Run one request and return the answer's bytes, its media type and the rows served.

    The answer is ``.npy`` when ``accept`` names ``application/x-npy``, JSON when it names
    ``application/json``, and otherwise in the request's own format. The model computes in its
    own precision (:attr:`Autoencoder.dtype`, float32 for the default model) whatever the
    request's format; ``.npy`` answers come in the request's float type (float64 for a JSON
    request), and JSON answers print each number with the digits of the model's precision.

    Raises
    ------
    RequestError
        For anything wrong with the request (4xx).
    """
    npy_dtype: np.dtype[Any] | None
    # Values are validated as sent (float64 for JSON) before the model converts them, so a
    # value just outside the valid range cannot round into it.
    if media_type == JSON_TYPE:
        rows = parse_json(body, operation.spec, max_rows)
        npy_dtype = np.dtype("<f8") if NPY_TYPE in accept else None
    else:
        rows, dtype = parse_npy(body, operation.spec, max_rows)
        npy_dtype = None if JSON_TYPE in accept and NPY_TYPE not in accept else dtype
    content, array = operation.run(model, rows)
    if npy_dtype is not None:
        return dump_npy(array, npy_dtype), NPY_TYPE, len(rows)
    return dump_json(content), JSON_TYPE, len(rows)
