"""Native HTTP bodies ⇄ numpy arrays, with errors that name what is wrong and where.

Two body formats are accepted and produced:

JSON (``application/json``)
    The fast path parses with simdjson straight into one float64 buffer (no Python object per
    number), then checks the shape on the array. Whatever it does not accept is parsed with
    orjson and goes through the pydantic models in :mod:`service.schemas`, which give exact
    error locations. The fast path only accepts bodies whose structure the models accept.
NumPy (``application/x-npy``)
    A ``.npy`` file of a float32 or float64 2-D array, read with ``allow_pickle=False`` (numpy
    parses the header with ``ast.literal_eval``; object arrays are refused).

The values themselves (finite, in range) and the batch limit are checked once for every
protocol, by the data plane (:mod:`service.dataplane`).
"""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
import orjson
import simdjson
from numpy.typing import NDArray
from pydantic import ValidationError

from service.errors import MAX_ERRORS, RequestError
from service.operations import MatrixSpec, too_many_rows

__all__ = [
    "JSON_TYPE",
    "NPY_TYPE",
    "drop_json_parser",
    "dump_json",
    "dump_npy",
    "json_parser",
    "parse_json",
    "parse_npy",
]

JSON_TYPE = "application/json"
NPY_TYPE = "application/x-npy"
_NPY_MAGIC = b"\x93NUMPY"
_NPY_DTYPES = (np.dtype("<f4"), np.dtype("<f8"), np.dtype(">f4"), np.dtype(">f8"))
_NPY_MAX_HEADER = 1024  # a (n, 64) float array needs about 128 bytes
_local = threading.local()
_UTF8_BOM = b"\xef\xbb\xbf"


def json_parser() -> simdjson.Parser:
    """This thread's simdjson parser.

    A parser reuses its buffers, and parsing again invalidates its previous document: use it
    within one call and let nothing of the document outlive it. After a ``RuntimeError`` call
    :func:`drop_json_parser`.
    """
    parser: simdjson.Parser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def drop_json_parser() -> None:
    """Forget this thread's parser (stuck on a document still referenced, or after an error)."""
    _local.parser = None


def _simdjson_rows(
    body: bytes, spec: MatrixSpec, max_rows: int
) -> tuple[int, NDArray[np.float64] | None]:
    """How many rows ``spec.key`` holds, and their numbers flattened (None: not a plain matrix).

    The parser's document must not outlive this call (a parser refuses to parse again while
    proxies into its last document exist), so nothing of it is returned or raised from here.
    """
    doc = json_parser().parse(body)
    rows = doc.get(spec.key) if isinstance(doc, simdjson.Object) and len(doc) == 1 else None
    if not isinstance(rows, simdjson.Array) or len(rows) == 0:
        return 0, None
    n = len(rows)
    if n > max_rows:
        return n, None
    # Every row an array of `width` (len() of a number or string row raises TypeError); one
    # "[" per row plus the outer one means no row holds a nested array, which the flattening
    # below would otherwise absorb.
    widths = {len(row) for row in rows}  # type: ignore[arg-type]
    if body.count(b"[") != n + 1 or widths != {spec.width}:
        return n, None
    # A copy of the numbers; raises TypeError unless every leaf is a number (no strings,
    # booleans, nulls).
    return n, np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)


def _fast_matrix(body: bytes, spec: MatrixSpec, max_rows: int) -> NDArray[np.float64] | None:
    """The matrix of a body that is exactly ``{key: [[width numbers], ...]}``, else None.

    simdjson validates the JSON and copies the numbers into one float64 buffer without a
    Python object per number. Anything else (other or repeated keys, other types, ragged or
    nested rows, invalid JSON) returns None for the precise path to
    accept or explain.
    """
    if body.startswith(_UTF8_BOM):  # simdjson skips a byte-order mark; JSON (orjson) does not
        return None
    try:
        n, flat = _simdjson_rows(body, spec, max_rows)
    except (ValueError, TypeError):  # invalid JSON, non-numbers
        return None
    except RuntimeError:  # huge integers; or a parser stuck on a document still referenced
        drop_json_parser()
        return None
    if n > max_rows:
        raise too_many_rows(n, max_rows, ["body", spec.key])
    if flat is None or flat.size != n * spec.width:
        return None
    return flat.reshape(n, spec.width)


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS]
    ]


def parse_json(body: bytes, spec: MatrixSpec, max_rows: int) -> NDArray[np.float64]:
    """Parse ``{"vectors": [[64 numbers], ...]}`` or ``{"latent": [[z1, z2], ...]}``.

    Returns
    -------
    array : ndarray of shape (n, spec.width)
        With ``1 <= n <= max_rows``; values not yet checked (see the module docstring).

    Raises
    ------
    RequestError
        422 for malformed or invalid bodies, 413 for more than ``max_rows`` rows.
    """
    array = _fast_matrix(body, spec, max_rows)
    if array is not None:
        return array
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        msg = f"Invalid JSON: {exc}"
        if body.startswith(_NPY_MAGIC):
            msg = f"{msg}. The body is a .npy file: send it with Content-Type: {NPY_TYPE}"
        raise RequestError.one(422, ["body"], msg, "json_invalid") from None
    if type(obj) is dict and type(obj.get(spec.key)) is list and len(obj[spec.key]) > max_rows:
        raise too_many_rows(len(obj[spec.key]), max_rows, ["body", spec.key])
    try:
        parsed = spec.model.model_validate(obj)
    except ValidationError as exc:
        raise RequestError(422, _validation_detail(exc)) from None
    return np.asarray(getattr(parsed, spec.key), dtype=np.float64).reshape(-1, spec.width)


def _npy_error(msg: str, loc: list[str | int] | None = None) -> RequestError:
    return RequestError.one(422, loc or ["body"], msg, "npy_invalid")


def parse_npy(
    body: bytes, spec: MatrixSpec, max_rows: int
) -> tuple[NDArray[np.float64], np.dtype[Any]]:
    """Parse a ``.npy`` body holding a float32 or float64 array of shape (n, spec.width).

    Returns
    -------
    array : ndarray of shape (n, spec.width), float32 or float64 as sent
        With ``1 <= n <= max_rows``; values not yet checked (see the module docstring).
    dtype : numpy dtype
        The body's own float type (little-endian), to answer in kind.

    Raises
    ------
    RequestError
        422 naming the problem (not .npy, pickled/object or non-float dtype, wrong shape,
        truncated or trailing data), 413 for too many rows.
    """
    if not body.startswith(_NPY_MAGIC):
        raise _npy_error("Not a .npy file: it must start with the bytes \\x93NUMPY")
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream, max_header_size=_NPY_MAX_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream, max_header_size=_NPY_MAX_HEADER)
        else:
            raise ValueError(f"format version {version} is not supported (use 1.0 or 2.0)")
        shape, fortran, dtype = header
    except (ValueError, SyntaxError, TypeError) as exc:
        raise _npy_error(f"Invalid .npy header: {exc}") from None
    if dtype.hasobject:
        raise _npy_error("Object (pickled) arrays are not accepted: send float32 or float64")
    if dtype not in _NPY_DTYPES:
        raise _npy_error(f"Array dtype must be float32 or float64, got {dtype.str}")
    if len(shape) != 2 or shape[1] != spec.width:
        raise _npy_error(f"Array shape must be (n, {spec.width}), got {tuple(shape)}")
    if shape[0] < 1:
        raise _npy_error("Array has no rows: send 1 or more")
    if shape[0] > max_rows:
        raise too_many_rows(shape[0], max_rows, ["body"])
    offset = stream.tell()
    expected = shape[0] * shape[1] * dtype.itemsize
    if len(body) - offset != expected:
        raise _npy_error(
            f"Array data is {len(body) - offset} bytes, expected {expected} for shape "
            f"{tuple(shape)} {dtype.str}"
        )
    native = dtype.newbyteorder("=")
    data = np.frombuffer(body, dtype=dtype, offset=offset).astype(native, copy=False)
    array = data.reshape(shape, order="F" if fortran else "C")
    return array, dtype.newbyteorder("<")


def dump_json(content: dict[str, Any]) -> bytes:
    """Serialise a response holding numpy arrays (C-contiguous) in one pass.

    float32 arrays print the shortest digits that read back as the same float32 value.
    """
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def dump_npy(array: NDArray[Any], dtype: np.dtype[Any]) -> bytes:
    """A ``.npy`` file of ``array`` converted to ``dtype``."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()
