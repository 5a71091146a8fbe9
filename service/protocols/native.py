"""The native protocol: ``POST /encode``, ``/decode``, ``/reconstruct`` with JSON or ``.npy``."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.dataplane import DataPlane
from service.errors import RequestError
from service.operations import NativeOperation
from service.parsing import JSON_TYPE, NPY_TYPE, dump_json, dump_npy, parse_json, parse_npy
from service.protocols import Answer, BodyReader, Headers

__all__ = ["check_content_type", "serve"]


def check_content_type(content_type: str) -> str:
    """The request's media type, or 415 unless it is JSON or ``.npy``."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in (JSON_TYPE, NPY_TYPE):
        raise RequestError.one(
            415,
            ["header", "content-type"],
            f"Content-Type must be {JSON_TYPE} or {NPY_TYPE} (got {content_type or 'none'})",
            "unsupported_media_type",
        )
    return media


async def serve(
    operation: NativeOperation, dataplane: DataPlane, headers: Headers, read_body: BodyReader
) -> Answer:
    """Serve one native request.

    The answer is ``.npy`` when ``Accept`` names ``application/x-npy``, JSON when it names
    ``application/json``, and otherwise in the request's own format. ``.npy`` answers come in
    the request's float type (float64 for a JSON request) with the answered outputs stacked as
    columns; JSON answers print each number with the digits of the model's precision.
    """
    served = dataplane.native_model()
    media_type = check_content_type(headers.get(b"content-type", ""))
    body = await read_body()
    accept = headers.get(b"accept", "")
    spec = operation.signature.input
    npy_dtype: np.dtype[Any] | None
    if media_type == JSON_TYPE:
        X = parse_json(body, spec, dataplane.max_batch)
        loc: list[str | int] = ["body", spec.key]
        npy_dtype = np.dtype("<f8") if NPY_TYPE in accept else None
    else:
        X, dtype = parse_npy(body, spec, dataplane.max_batch)
        loc = ["body"]
        npy_dtype = None if JSON_TYPE in accept and NPY_TYPE not in accept else dtype
    inference = dataplane.infer(served, operation.signature, X, operation.wanted, loc)
    outputs = inference.outputs
    if npy_dtype is not None:
        columns = [outputs[name] for _, name in operation.answer]
        array = columns[0] if len(columns) == 1 else np.column_stack(columns)
        return Answer(dump_npy(array, npy_dtype), NPY_TYPE, inference)
    content = {key: outputs[name] for key, name in operation.answer}
    return Answer(dump_json(content), JSON_TYPE, inference)
