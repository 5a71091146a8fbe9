"""Request-scoped helpers shared by the routers: the model, the settings, bodies in and out."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Request, Response
from numpy.typing import NDArray

from service.model import Autoencoder
from service.parsing import (
    JSON_TYPE,
    NPY_TYPE,
    MatrixSpec,
    RequestError,
    dump_json,
    dump_npy,
    parse_json,
    parse_npy,
)
from service.settings import Settings

__all__ = ["Body", "get_model", "read_body", "read_matrix", "respond", "settings_of"]


def settings_of(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_model(request: Request) -> Autoencoder:
    """The loaded model, or 503 while there is none."""
    model: Autoencoder | None = request.app.state.model
    if model is None:
        raise RequestError(503, "Model not loaded yet")
    return model


async def read_body(request: Request) -> bytes:
    """The request body, refusing (413) as soon as it exceeds the configured limit.

    The limit is checked against Content-Length before reading and again while streaming, so an
    oversized body is never buffered in full.
    """
    limit = settings_of(request).body_limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> RequestError:
    return RequestError.one(
        413, ["body"], f"Request body exceeds the limit of {limit} bytes", "body_too_large"
    )


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


class Body:
    """A parsed request matrix and how the client wants the answer."""

    __slots__ = ("array", "npy_dtype")

    def __init__(self, array: NDArray[np.float64], npy_dtype: np.dtype[Any] | None) -> None:
        self.array = array
        # The dtype to answer in when the answer is .npy; None for a JSON answer.
        self.npy_dtype = npy_dtype


async def read_matrix(request: Request, spec: MatrixSpec) -> Body:
    """Read and validate a JSON or ``.npy`` body; decide the answer's format from ``Accept``.

    The answer is ``.npy`` when ``Accept`` names ``application/x-npy``, JSON when it names
    ``application/json``, and otherwise in the request's own format.
    """
    content_type = _media_type(request.headers.get("content-type", ""))
    if content_type not in (JSON_TYPE, NPY_TYPE):
        shown = request.headers.get("content-type") or "none"
        raise RequestError.one(
            415,
            ["header", "content-type"],
            f"Content-Type must be {JSON_TYPE} or {NPY_TYPE} (got {shown})",
            "unsupported_media_type",
        )
    body = await read_body(request)
    max_rows = settings_of(request).max_batch
    accept = request.headers.get("accept", "")
    if content_type == JSON_TYPE:
        array = parse_json(body, spec, max_rows)
        return Body(array, np.dtype("<f8") if NPY_TYPE in accept else None)
    array, dtype = parse_npy(body, spec, max_rows)
    wants_json = JSON_TYPE in accept and NPY_TYPE not in accept
    # Answer in the request's precision: float32 in, float32 out.
    return Body(array, None if wants_json else dtype)


def respond(body: Body, content: dict[str, Any], npy_array: NDArray[np.float64]) -> Response:
    """The answer: ``content`` as JSON, or ``npy_array`` as ``.npy`` when that was asked for."""
    if body.npy_dtype is not None:
        return Response(content=dump_npy(npy_array, body.npy_dtype), media_type=NPY_TYPE)
    return Response(content=dump_json(content), media_type=JSON_TYPE)
