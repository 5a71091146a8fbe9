"""HTTP bodies ⇄ numpy arrays, with validation that names what is wrong and where.

The fast path parses JSON with orjson and converts it to a float array in one numpy call, then
checks shape and range on the array. Whatever the fast path does not accept goes through the
pydantic models in :mod:`service.schemas`, which give the exact error locations. Both paths
accept exactly the same inputs: the fast path only accepts bodies that the models accept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from service.artifact import N_FEATURES, PIXEL_MAX
from service.schemas import LATENT_LIMIT, DecodeRequest, EncodeRequest

__all__ = [
    "JSON_TYPE",
    "MAX_ERRORS",
    "RequestError",
    "dump_json",
    "parse_codes",
    "parse_vectors",
]

JSON_TYPE = "application/json"
MAX_ERRORS = 20  # a bad 10 000-row batch must not produce a 640 000-item error list


class RequestError(Exception):
    """A request that cannot be served, with the HTTP status and the error detail to send."""

    def __init__(self, status_code: int, detail: list[dict[str, Any]] | str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail

    @classmethod
    def one(cls, status_code: int, loc: list[str | int], msg: str, type_: str) -> RequestError:
        return cls(status_code, [{"loc": loc, "msg": msg, "type": type_}])


def _fast_matrix(
    obj: Any, key: str, width: int, lo: float, hi: float
) -> NDArray[np.float64] | None:
    rows = obj.get(key)
    if type(rows) is not list or not rows:
        return None
    try:
        array = np.array(rows)
    except (ValueError, TypeError, OverflowError):  # ragged or nested rows
        return None
    # dtype kind i/u/f only: strings, nulls, huge ints (object) and all-bool rows fall through.
    if array.ndim != 2 or array.shape[1] != width or array.dtype.kind not in "iuf":
        return None
    array = array.astype(np.float64, copy=False)
    if not (array.min() >= lo and array.max() <= hi):  # also False for NaN
        return None
    return array


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS]
    ]


def _parse_matrix(
    body: bytes,
    key: str,
    width: int,
    lo: float,
    hi: float,
    model: type[BaseModel],
    max_rows: int,
) -> NDArray[np.float64]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError.one(422, ["body"], f"Invalid JSON: {exc}", "json_invalid") from None
    if type(obj) is dict and type(obj.get(key)) is list and len(obj[key]) > max_rows:
        raise RequestError.one(
            413,
            ["body", key],
            f"Batch of {len(obj[key])} rows exceeds the limit of {max_rows} per request",
            "too_many_rows",
        )
    # JSON booleans would pass numpy's conversion as 0/1; such bodies take the precise path.
    if type(obj) is dict and len(obj) == 1 and b"true" not in body and b"false" not in body:
        array = _fast_matrix(obj, key, width, lo, hi)
        if array is not None:
            return array
    try:
        parsed = model.model_validate(obj)
    except ValidationError as exc:
        raise RequestError(422, _validation_detail(exc)) from None
    return np.asarray(getattr(parsed, key), dtype=np.float64).reshape(-1, width)


def parse_vectors(body: bytes, max_rows: int) -> NDArray[np.float64]:
    """Parse ``{"vectors": [[64 numbers], ...]}``.

    Returns
    -------
    X : ndarray of shape (n, 64)
        With ``1 <= n <= max_rows`` and every value finite in [0, 16].

    Raises
    ------
    RequestError
        422 for malformed or invalid bodies, 413 for more than ``max_rows`` rows.
    """
    return _parse_matrix(body, "vectors", N_FEATURES, 0.0, PIXEL_MAX, EncodeRequest, max_rows)


def parse_codes(body: bytes, max_rows: int) -> NDArray[np.float64]:
    """Parse ``{"latent": [[z1, z2], ...]}``.

    Returns
    -------
    Z : ndarray of shape (n, 2)
        With ``1 <= n <= max_rows`` and every value finite, ``|z| <= 1e6``.
    """
    return _parse_matrix(body, "latent", 2, -LATENT_LIMIT, LATENT_LIMIT, DecodeRequest, max_rows)


def dump_json(content: dict[str, Any]) -> bytes:
    """Serialise a response holding numpy arrays (float64, C-contiguous) in one pass."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
