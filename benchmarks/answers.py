"""Check that two servers give the same answers before either is timed.

A throughput figure only means something if the server computed the right thing, so every
server is asked for ``/encode`` and ``/reconstruct`` of the exact bodies the timed runs send,
and its answers are compared with the reference (the straightforward app, itself the same
numpy forward pass as the service). The service's Open Inference Protocol ``infer`` is asked
for the same outputs (``latent``; ``reconstruction`` and ``error``) with JSON or binary tensors.

The functions take an :class:`httpx.Client`, so they work against a live server, a Starlette
``TestClient`` (in-process, no sockets) or an :class:`httpx.MockTransport`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray

__all__ = [
    "HEADER_LENGTH",
    "JSON_TYPE",
    "NPY_TYPE",
    "OIP_BINARY_TYPE",
    "OIP_ENCODE",
    "OIP_PATH",
    "OIP_RECONSTRUCT",
    "TOLERANCE",
    "AnswerMismatchError",
    "Answers",
    "NpyUnsupportedError",
    "OipBody",
    "check_answers",
    "compare_answers",
    "fetch_json_answers",
    "fetch_npy_answers",
    "fetch_oip_answers",
    "json_body",
    "npy_body",
    "oip_body",
    "parse_oip_answer",
]

# Every server computes the same float32 forward pass (the model's precision) and JSON answers
# may print it with fewer digits (the shortest that read back as the same float32), so answers
# agree to float32 rounding; a wrong weight or formula shows up as differences near 1e-2.
TOLERANCE = 1e-6  # relative and absolute

JSON_TYPE = "application/json"
NPY_TYPE = "application/x-npy"
N_FEATURES = 64
N_LATENT = 2

# The Open Inference Protocol (KServe V2) infer of the service's model (one artifact is served
# as model "digitcode"), with its binary tensor extension.
OIP_PATH = "/v2/models/digitcode/infer"
OIP_BINARY_TYPE = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
OIP_ENCODE = ("latent",)  # the outputs /encode answers
OIP_RECONSTRUCT = ("reconstruction", "error")  # the outputs /reconstruct answers


class AnswerMismatchError(Exception):
    """A server's answer differs from the reference (or is malformed)."""


class NpyUnsupportedError(Exception):
    """The server does not (yet) answer ``.npy`` requests with ``.npy``."""


@dataclass(frozen=True)
class Answers:
    """What a server answered for one batch of pixel vectors.

    Attributes
    ----------
    latent : ndarray of shape (n, 2)
        The ``/encode`` answer.
    vectors : ndarray of shape (n, 64)
        The ``/reconstruct`` reconstructions.
    errors : ndarray of shape (n,)
        The ``/reconstruct`` errors.
    """

    latent: NDArray[np.float64]
    vectors: NDArray[np.float64]
    errors: NDArray[np.float64]


def _json_rows(rows: NDArray[np.float64]) -> list[list[float]]:
    """Pixel rows as JSON numbers: float64, printed by orjson as the Python client does."""
    rows_list: list[list[float]] = np.asarray(rows, dtype=np.float64).tolist()
    return rows_list


def json_body(rows: NDArray[np.float64]) -> bytes:
    """``{"vectors": [[...], ...]}`` for pixel rows, as the Python client sends it."""
    return orjson.dumps({"vectors": _json_rows(rows)})


@dataclass(frozen=True)
class OipBody:
    """One Open Inference Protocol ``infer`` request body and how it is sent.

    Attributes
    ----------
    content : bytes
        The body: JSON, or with the binary extension JSON followed by the tensor's bytes.
    outputs : tuple of str
        The outputs it asks for; the answer must hold exactly these.
    headers : mapping
        Headers it needs besides ``Content-Type`` and ``Accept``: the length of the JSON part
        (``Inference-Header-Content-Length``) when binary.
    """

    content: bytes
    outputs: tuple[str, ...]
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return OIP_BINARY_TYPE if HEADER_LENGTH in self.headers else JSON_TYPE


def oip_body(rows: NDArray[np.float64], outputs: Sequence[str], *, binary: bool) -> OipBody:
    """An ``infer`` request of input ``vectors`` (``FP32``) asking for ``outputs``.

    JSON: the rows nested in ``data``, their numbers printed as in :func:`json_body`. Binary:
    the rows as little-endian float32 bytes after the JSON, and every output asked for as
    binary data.
    """
    X = np.asarray(rows, dtype=np.float64)
    tensor: dict[str, object] = {"name": "vectors", "shape": list(X.shape), "datatype": "FP32"}
    if not binary:
        tensor["data"] = _json_rows(X)
        request = {"inputs": [tensor], "outputs": [{"name": name} for name in outputs]}
        return OipBody(orjson.dumps(request), tuple(outputs))
    data = np.ascontiguousarray(X, dtype="<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(data)}
    request = {
        "inputs": [tensor],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }
    header = orjson.dumps(request)
    return OipBody(header + data, tuple(outputs), {HEADER_LENGTH: str(len(header))})


def npy_body(rows: NDArray[np.float64], dtype: type[np.floating] = np.float32) -> bytes:
    """The bytes of ``np.save`` of ``rows`` as a C-contiguous array of ``dtype``."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(rows, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()


def _post(
    client: httpx.Client,
    path: str,
    body: bytes,
    content_type: str,
    extra_headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    headers = {"Content-Type": content_type, "Accept": content_type, **(extra_headers or {})}
    return client.post(path, content=body, headers=headers)


def _require_ok(response: httpx.Response, label: str) -> None:
    if response.status_code != 200:
        raise AnswerMismatchError(
            f"{label}: {response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:200]}"
        )


def _as_matrix(value: object, width: int | None, label: str) -> NDArray[np.float64]:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnswerMismatchError(f"{label}: not a numeric array ({exc})") from None
    expected_ndim = 1 if width is None else 2
    if array.ndim != expected_ndim or (width is not None and array.shape[1] != width):
        raise AnswerMismatchError(f"{label}: unexpected shape {array.shape}")
    return array


def fetch_json_answers(client: httpx.Client, body: bytes) -> Answers:
    """POST a ``{"vectors": ...}`` body to ``/encode`` and ``/reconstruct`` and parse the answers.

    Raises
    ------
    AnswerMismatchError
        If either request does not answer 200 with the documented JSON shape.
    """
    encoded = _post(client, "/encode", body, JSON_TYPE)
    _require_ok(encoded, "JSON /encode")
    reconstructed = _post(client, "/reconstruct", body, JSON_TYPE)
    _require_ok(reconstructed, "JSON /reconstruct")
    try:
        latent = encoded.json()["latent"]
        rec = reconstructed.json()
        vectors, errors = rec["vectors"], rec["errors"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AnswerMismatchError(f"JSON answer is not the documented shape ({exc!r})") from None
    return Answers(
        latent=_as_matrix(latent, N_LATENT, "JSON /encode latent"),
        vectors=_as_matrix(vectors, N_FEATURES, "JSON /reconstruct vectors"),
        errors=_as_matrix(errors, None, "JSON /reconstruct errors"),
    )


def _load_npy(response: httpx.Response, label: str) -> NDArray[np.float64]:
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
    if response.status_code in (406, 415) or (
        response.status_code == 200 and content_type != NPY_TYPE
    ):
        raise NpyUnsupportedError(
            f"{label}: answered {response.status_code} with Content-Type {content_type or 'none'}"
        )
    _require_ok(response, label)
    try:
        array = np.load(io.BytesIO(response.content), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AnswerMismatchError(f"{label}: body is not a .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise AnswerMismatchError(f"{label}: body is not a single .npy array")
    return array


def fetch_npy_answers(client: httpx.Client, body: bytes, dtype: type[np.floating]) -> Answers:
    """POST a ``.npy`` body to ``/encode`` and ``/reconstruct`` and parse the ``.npy`` answers.

    Parameters
    ----------
    client : httpx.Client
    body : bytes
        ``np.save`` of an array of shape (n, 64) and ``dtype``.
    dtype : numpy floating type
        The request's dtype; the answers must have the same one.

    Raises
    ------
    NpyUnsupportedError
        If the server answers 406/415 or answers 200 without ``Content-Type: application/x-npy``.
    AnswerMismatchError
        If an answer has the wrong status, dtype or shape.
    """
    latent = _load_npy(_post(client, "/encode", body, NPY_TYPE), ".npy /encode")
    rec = _load_npy(_post(client, "/reconstruct", body, NPY_TYPE), ".npy /reconstruct")
    for label, array, width in ((".npy /encode", latent, N_LATENT), (".npy /reconstruct", rec, 65)):
        if array.dtype != np.dtype(dtype):
            raise AnswerMismatchError(f"{label}: answer dtype {array.dtype}, request dtype {dtype}")
        if array.ndim != 2 or array.shape[1] != width:
            raise AnswerMismatchError(f"{label}: answer shape {array.shape}, expected (n, {width})")
    rec64 = rec.astype(np.float64)
    return Answers(
        latent=latent.astype(np.float64),
        vectors=rec64[:, :N_FEATURES],
        errors=rec64[:, N_FEATURES],
    )


def parse_oip_answer(response: httpx.Response, label: str) -> dict[str, NDArray[np.float64]]:
    """The outputs of an ``infer`` answer by name, shaped as it says, as float64.

    Each output's numbers are either in its JSON ``data`` or, with the binary extension, the
    next ``parameters.binary_data_size`` bytes after the JSON part (whose length is the
    answer's ``Inference-Header-Content-Length``; without that header there is no binary part).

    Raises
    ------
    AnswerMismatchError
        If the answer is not 200, or not that shape: datatype other than ``FP32``, sizes that
        do not match the shapes, binary data missing or left over.
    """
    _require_ok(response, label)
    body = response.content
    length = response.headers.get(HEADER_LENGTH, str(len(body)))
    if not length.isdigit() or int(length) > len(body):
        raise AnswerMismatchError(f"{label}: {HEADER_LENGTH} {length!r}, body {len(body)} bytes")
    binary = memoryview(body)[int(length) :]
    arrays: dict[str, NDArray[np.float64]] = {}
    try:
        for output in orjson.loads(body[: int(length)])["outputs"]:
            name, shape = output["name"], tuple(output["shape"])
            if name in arrays:
                raise AnswerMismatchError(f"{label}: output {name!r} answered twice")
            if output["datatype"] != "FP32":
                raise AnswerMismatchError(f"{label}: {name} is {output['datatype']}, not FP32")
            if "data" in output:
                flat = np.asarray(output["data"], dtype=np.float64)
            else:
                size = output["parameters"]["binary_data_size"]
                if type(size) is not int or not 0 <= size <= len(binary) or size % 4:
                    raise AnswerMismatchError(
                        f"{label}: {name} binary_data_size {size!r}, {len(binary)} bytes left"
                    )
                flat = np.frombuffer(binary[:size], dtype="<f4").astype(np.float64)
                binary = binary[size:]
            arrays[name] = flat.reshape(shape)
    except (ValueError, KeyError, TypeError) as exc:
        raise AnswerMismatchError(f"{label}: not the documented answer ({exc!r})") from None
    if len(binary):
        raise AnswerMismatchError(f"{label}: {len(binary)} bytes after the outputs' binary data")
    return arrays


def _oip_outputs(client: httpx.Client, body: OipBody, label: str) -> dict[str, NDArray[np.float64]]:
    response = _post(client, OIP_PATH, body.content, body.content_type, body.headers)
    arrays = parse_oip_answer(response, label)
    if sorted(arrays) != sorted(body.outputs):
        raise AnswerMismatchError(f"{label}: outputs {sorted(arrays)}, asked {list(body.outputs)}")
    return arrays


def fetch_oip_answers(client: httpx.Client, encode: OipBody, reconstruct: OipBody) -> Answers:
    """POST two ``infer`` requests (:data:`OIP_ENCODE`, :data:`OIP_RECONSTRUCT`), parse the answers.

    Raises
    ------
    AnswerMismatchError
        If an answer is not 200, not the documented shape, or does not hold exactly the
        outputs asked for.
    """
    latent = _oip_outputs(client, encode, "OIP infer latent")["latent"]
    rec = _oip_outputs(client, reconstruct, "OIP infer reconstruction, error")
    return Answers(
        latent=_as_matrix(latent, N_LATENT, "OIP latent"),
        vectors=_as_matrix(rec["reconstruction"], N_FEATURES, "OIP reconstruction"),
        errors=_as_matrix(rec["error"], None, "OIP error"),
    )


def compare_answers(
    expected: Answers, actual: Answers, *, atol: float = TOLERANCE, rtol: float = TOLERANCE
) -> list[str]:
    """Describe every way ``actual`` differs from ``expected``; empty when they agree.

    Values agree when ``|actual - expected| <= atol + rtol * |expected|`` (NaN never agrees).
    """
    problems: list[str] = []
    for name in ("latent", "vectors", "errors"):
        want: NDArray[np.float64] = getattr(expected, name)
        got: NDArray[np.float64] = getattr(actual, name)
        if want.shape != got.shape:
            problems.append(f"{name}: shape {got.shape}, expected {want.shape}")
            continue
        close = np.isclose(got, want, rtol=rtol, atol=atol)
        if not close.all():
            index = np.unravel_index(int(np.argmin(close)), close.shape)
            worst = float(np.nanmax(np.abs(got - want))) if got.size else 0.0
            problems.append(
                f"{name}: {int((~close).sum())} values differ, first at {tuple(map(int, index))}: "
                f"{got[index]!r} vs {want[index]!r} (max |diff| {worst:.3g}, atol {atol:g})"
            )
    return problems


def check_answers(
    expected: Answers,
    actual: Answers,
    *,
    atol: float = TOLERANCE,
    rtol: float = TOLERANCE,
    label: str = "answers",
) -> None:
    """Raise :class:`AnswerMismatchError` unless ``actual`` equals ``expected`` within tolerance."""
    problems = compare_answers(expected, actual, atol=atol, rtol=rtol)
    if problems:
        raise AnswerMismatchError(f"{label} differ: " + "; ".join(problems))
