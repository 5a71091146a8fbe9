"""The Open Inference Protocol (KServe V2) ``infer``, REST, with the binary tensor extension.

``POST /v2/models/{model}[/versions/{version}]/infer``. The JSON request names one input
(``vectors`` for ``<model>``, ``latent`` for ``<model>-decoder``) of datatype ``FP32`` or
``FP64`` and shape ``[n, width]``, its data nested or flat (row-major) or, with the binary
extension, as ``parameters.binary_data_size`` bytes after the JSON (whose length is in the
``Inference-Header-Content-Length`` header). ``outputs`` picks what is computed and returned;
``binary_data`` (per output) or ``binary_data_output`` (per request) returns an output as raw
little-endian bytes after the JSON answer. Outputs have the input's datatype, but ``is_outlier``
is ``BOOL`` (one byte per value in binary), and the answer's ``parameters`` then give the
``outlier_threshold``, ``distance_threshold`` and ``outlier_quantile``; ``feature_score`` is
returned only when named. No Content-Type is required (the Triton client sends none). The
metadata and health endpoints are FastAPI routes in :mod:`service.routers.oip`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson
from numpy.typing import NDArray

from service.dataplane import DataPlane
from service.errors import RequestError
from service.operations import Signature, too_many_rows
from service.parsing import drop_json_parser, json_parser
from service.protocols import Answer, BodyReader, Headers, parse_length

__all__ = ["DATATYPES", "HEADER_LENGTH", "serve"]

HEADER_LENGTH = "Inference-Header-Content-Length"
_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()
DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_BINARY_TYPE = "application/octet-stream"


def _bad(msg: str, *loc: str | int) -> RequestError:
    return RequestError.one(400, list(loc), msg, "invalid_request")


@dataclass
class _Input:
    name: str
    shape: list[int]
    datatype: str
    binary_size: int | None
    data: NDArray[np.float64] | None  # JSON data, flattened
    data_error: str | None  # why the JSON data is not a list of numbers
    rows: int | None  # nested data: how many rows, if every row has the same length
    row_length: int | None


@dataclass
class _Request:
    id: str | None
    inputs: list[_Input]
    outputs: list[tuple[str, bool | None]] | None  # (name, binary_data) in order, or all
    binary_output: bool


def _plain(value: Any) -> Any:
    """A simdjson element as plain Python (only used on small parts of the request)."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _parameters(value: Any, *loc: str | int) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, simdjson.Object):
        raise _bad("parameters must be an object", *loc, "parameters")
    return dict(value.as_dict())


def _read_input(element: Any, i: int) -> _Input:
    loc = ("inputs", i)
    if not isinstance(element, simdjson.Object):
        raise _bad("each input must be an object", *loc)
    name = element.get("name")
    if not isinstance(name, str):
        raise _bad("name must be a string", *loc, "name")
    shape = _plain(element.get("shape"))
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad("shape must be a list of non-negative integers", *loc, "shape")
    datatype = element.get("datatype")
    if not isinstance(datatype, str):
        raise _bad("datatype must be a string", *loc, "datatype")
    size = _parameters(element.get("parameters"), *loc).get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise _bad("binary_data_size must be a non-negative integer", *loc, "parameters")
    raw = element.get("data")
    if size is not None and raw is not None:
        raise _bad("give data or binary_data_size, not both", *loc)
    data: NDArray[np.float64] | None = None
    data_error = None
    rows = row_length = None
    if isinstance(raw, simdjson.Array):
        try:
            data = np.frombuffer(raw.as_buffer(of_type="d"), dtype=np.float64)
        except (TypeError, ValueError):
            data_error = "data must hold only numbers (nested lists or flat)"
        else:
            if len(raw) != data.size:  # not flat: rows of numbers, all of one length?
                try:
                    lengths = {len(row) for row in raw}  # type: ignore[arg-type]
                except TypeError:  # a number beside the rows
                    lengths = set()
                rows = len(raw)
                row_length = lengths.pop() if len(lengths) == 1 else -1
    elif raw is not None:
        data_error = "data must be a list of numbers (nested or flat)"
    elif size is None:
        data_error = "data is missing (give data, or binary_data_size with the binary extension)"
    return _Input(name, shape, datatype, size, data, data_error, rows, row_length)


def _read_outputs(value: Any) -> list[tuple[str, bool | None]] | None:
    if value is None:
        return None
    if not isinstance(value, simdjson.Array) or len(value) == 0:
        raise _bad("outputs must be a non-empty list (leave it out for every output)", "outputs")
    outputs: list[tuple[str, bool | None]] = []
    for i, element in enumerate(value):
        if not isinstance(element, simdjson.Object) or not isinstance(element.get("name"), str):
            raise _bad("each output must be an object with a string name", "outputs", i)
        binary = _parameters(element.get("parameters"), "outputs", i).get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise _bad("binary_data must be true or false", "outputs", i, "parameters")
        name = str(element.get("name"))
        if any(name == seen for seen, _ in outputs):
            raise _bad(f"output {name!r} is asked for more than once", "outputs", i)
        outputs.append((name, binary))
    return outputs


def _read_request(header: bytes, has_binary: bool) -> _Request:
    """The JSON part of a request, with the tensors' JSON data copied out as float64.

    Nothing of the parser's document may outlive this call (the thread's parser refuses to
    parse the next request while it does): errors are raised afresh, without the traceback
    whose frames hold parts of the document.
    """
    try:
        doc = json_parser().parse(header)
    except ValueError as exc:
        hint = "" if has_binary else f" (binary tensor data needs the {HEADER_LENGTH} header)"
        raise _bad(f"Invalid JSON: {exc}{hint}", "body") from None
    except RuntimeError as exc:  # e.g. integers beyond 64 bits
        drop_json_parser()
        raise _bad(f"Cannot read the JSON: {exc}", "body") from None
    error: RequestError | None = None
    try:
        return _read_document(doc)
    except RequestError as exc:
        error = RequestError(exc.status_code, exc.detail)
    finally:
        del doc
    assert error is not None
    raise error


def _read_document(doc: Any) -> _Request:
    if not isinstance(doc, simdjson.Object):
        raise _bad("the request must be a JSON object", "body")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("id must be a string", "id")
    binary_output = _parameters(doc.get("parameters")).get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise _bad("binary_data_output must be true or false", "parameters")
    inputs = doc.get("inputs")
    if not isinstance(inputs, simdjson.Array) or len(inputs) == 0:
        raise _bad("inputs must be a non-empty list", "inputs")
    read = [_read_input(element, i) for i, element in enumerate(inputs)]
    outputs = _read_outputs(doc.get("outputs"))
    return _Request(request_id, read, outputs, binary_output)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    n = parse_length(header_length)
    if n is None or not 0 < n <= len(body):
        raise _bad(
            f"{HEADER_LENGTH} must be a length within the body's {len(body)} bytes "
            f"(got {header_length!r})",
            "header",
            HEADER_LENGTH,
        )
    return body[:n], memoryview(body)[n:]


def _tensor(
    item: _Input, signature: Signature, binary: memoryview, max_rows: int
) -> tuple[NDArray[np.float64], np.dtype[Any], int]:
    """The input's array (float32 or float64 as sent), its dtype, and the binary bytes used."""
    spec = signature.input
    loc = ("inputs", item.name)
    dtype = DATATYPES.get(item.datatype)
    if dtype is None:
        raise _bad(
            f"datatype {item.datatype!r} is not supported: use FP32 or FP64", *loc, "datatype"
        )
    if len(item.shape) != 2 or item.shape[1] != spec.width or item.shape[0] < 1:
        raise _bad(f"shape must be [n, {spec.width}] with n >= 1 (got {item.shape})", *loc, "shape")
    n = item.shape[0]
    if n > max_rows:
        raise too_many_rows(n, max_rows, [*loc, "shape"])
    count = n * spec.width
    if item.binary_size is None:
        if item.data is None:
            raise _bad(str(item.data_error), *loc, "data")
        if item.data.size != count:
            raise _bad(
                f"data holds {item.data.size} numbers, shape {item.shape} needs {count}",
                *loc,
                "data",
            )
        if item.rows is not None and (item.rows, item.row_length) != (n, spec.width):
            raise _bad(
                f"data must be flat or {n} rows of {spec.width} numbers (shape {item.shape})",
                *loc,
                "data",
            )
        return item.data.reshape(n, spec.width), dtype, 0
    expected = count * dtype.itemsize
    if item.binary_size != expected:
        raise _bad(
            f"binary_data_size is {item.binary_size}, shape {item.shape} of {item.datatype} "
            f"needs {expected} bytes",
            *loc,
            "parameters",
        )
    if expected > len(binary):
        raise _bad(
            f"the body holds {len(binary)} bytes of binary data for this input, "
            f"binary_data_size says {expected}",
            *loc,
            "parameters",
        )
    array = np.frombuffer(binary, dtype=dtype, count=count)
    return array.reshape(n, spec.width), dtype, expected


async def serve(
    model_name: str,
    version: str | None,
    dataplane: DataPlane,
    headers: Headers,
    read_body: BodyReader,
) -> Answer:
    """Serve one ``infer`` request of the Open Inference Protocol."""
    served, signature = dataplane.resolve(model_name, version)
    body = await read_body()
    header_length = headers.get(_HEADER_LENGTH_KEY)
    header, binary = _split(body, header_length)
    request = _read_request(header, header_length is not None)
    for item in request.inputs:
        if item.name != signature.input.key:
            raise _bad(
                f"model {model_name!r} has one input, {signature.input.key!r}; got {item.name!r}",
                "inputs",
            )
    if len(request.inputs) != 1:
        raise _bad(f"input {signature.input.key!r} is given more than once", "inputs")
    X, dtype, used = _tensor(request.inputs[0], signature, binary, dataplane.max_batch)
    if used != len(binary):
        raise _bad(
            f"the body has {len(binary) - used} bytes after the tensors' binary data", "body"
        )
    asked: list[tuple[str, bool | None]]
    if request.outputs is None:
        asked = [(o.name, None) for o in signature.outputs if o.default]
    else:
        asked = request.outputs
        for name, _ in asked:
            if name not in signature.output_names:
                names = ", ".join(o.name for o in signature.outputs)
                raise _bad(
                    f"model {model_name!r} has no output {name!r} (outputs: {names})", "outputs"
                )
    inference = await dataplane.infer(
        served, signature, X, frozenset(name for name, _ in asked), ["inputs", signature.input.key]
    )
    float_type = request.inputs[0].datatype
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary_data in asked:
        datatype = signature.output(name).datatype or float_type
        array = np.ascontiguousarray(
            inference.outputs[name], dtype=np.bool_ if datatype == "BOOL" else dtype
        )
        output: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if binary_data if binary_data is not None else request.binary_output:
            data = array.tobytes()
            output["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            output["data"] = array.reshape(-1)
        described.append(output)
    content: dict[str, Any] = {"model_name": model_name, "model_version": served.version}
    if request.id is not None:
        content["id"] = request.id
    if "is_outlier" in inference.outputs:
        model = served.model
        content["parameters"] = {
            "outlier_threshold": model.threshold,
            "distance_threshold": model.distance_threshold,
            "outlier_quantile": model.outlier_quantile,
        }
    content["outputs"] = described
    json_part = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Answer(json_part, "application/json", inference)
    return Answer(
        b"".join([json_part, *chunks]),
        _BINARY_TYPE,
        inference,
        [(_HEADER_LENGTH_KEY, str(len(json_part)).encode())],
    )
