"""The native protocol: ``POST /encode``, ``/decode``, ``/reconstruct`` with JSON or ``.npy``."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from service.dataplane import DataPlane
from service.errors import RequestError
from service.operations import NativeOperation
from service.parsing import JSON_TYPE, NPY_TYPE, dump_json, dump_npy, parse_json, parse_npy
from service.protocols import QUERY_KEY, Answer, BodyReader, Headers

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


def _optional(operation: NativeOperation, query: str) -> tuple[tuple[str, str], ...]:
    """The optional outputs the query asks for (``?feature_scores=true``), or 422."""
    if not query or not operation.optional:
        return ()
    asked: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        entry = next((e for e in operation.optional if e[0] == key), None)
        if entry is None:
            continue  # other parameters are not ours to refuse (caches, tracing)
        if value not in ("true", "false"):
            raise RequestError.one(
                422, ["query", key], f"{key} must be true or false (got {value!r})", "bool_type"
            )
        if value == "true" and entry not in asked:
            asked.append(entry)
    return tuple(asked)


def _npy_version(accept: str) -> int:
    """The ``.npy`` layout asked for: 2 with ``application/x-npy; version=2``, else 1."""
    return 2 if _NPY_V2.search(accept) else 1


_NPY_V2 = re.compile(r"application/x-npy\s*;[^,]*\bversion\s*=\s*\"?2\b", re.IGNORECASE)


async def serve(
    operation: NativeOperation, dataplane: DataPlane, headers: Headers, read_body: BodyReader
) -> Answer:
    """Serve one native request.

    The answer is ``.npy`` when ``Accept`` names ``application/x-npy``, JSON when it names
    ``application/json``, and otherwise in the request's own format. ``.npy`` answers come in
    the request's float type (float64 for a JSON request) with the answered outputs stacked as
    columns (see :class:`NativeOperation` for the layouts); JSON answers print each number with
    the digits of the model's precision. An answer with outliers flagged says which threshold
    flagged them: ``threshold`` (and ``distance_threshold``) in JSON, the error's in the
    ``X-Outlier-Threshold`` header in both.
    """
    served = dataplane.native_model()
    media_type = check_content_type(headers.get(b"content-type", ""))
    optional = _optional(operation, headers.get(QUERY_KEY, ""))
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
    wanted = operation.wanted.union(o for _, o in optional) if optional else operation.wanted
    inference = await dataplane.infer(served, operation.signature, X, wanted, loc)
    outputs = inference.outputs
    model = served.model
    threshold = model.threshold if "is_outlier" in wanted else None
    extra = [] if threshold is None else [(b"x-outlier-threshold", str(threshold).encode())]
    if npy_dtype is not None:
        version = _npy_version(accept) if len(operation.npy_layouts) > 1 else 1
        columns = [outputs[name] for _, name in operation.npy_answer(version, optional)]
        array = columns[0] if len(columns) == 1 else np.column_stack(columns)
        npy_type = NPY_TYPE if version == 1 else f"{NPY_TYPE}; version=2"
        return Answer(dump_npy(array, npy_dtype), npy_type, inference, extra)
    content: dict[str, Any] = {key: outputs[name] for key, name in operation.answer + optional}
    if threshold is not None:
        content["threshold"] = threshold
        content["distance_threshold"] = model.distance_threshold
    return Answer(dump_json(content), JSON_TYPE, inference, extra)
