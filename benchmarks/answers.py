"""Check that two servers give the same answers before either is timed.

A throughput figure only means something if the server computed the right thing, so every
server is asked for ``/encode`` and ``/reconstruct`` of the exact bodies the timed runs send,
and its answers are compared with the reference (the straightforward app, itself the same
numpy forward pass as the service).

The functions take an :class:`httpx.Client`, so they work against a live server, a Starlette
``TestClient`` (in-process, no sockets) or an :class:`httpx.MockTransport`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray

__all__ = [
    "JSON_TYPE",
    "NPY_TYPE",
    "TOLERANCE",
    "AnswerMismatchError",
    "Answers",
    "NpyUnsupportedError",
    "check_answers",
    "compare_answers",
    "fetch_json_answers",
    "fetch_npy_answers",
    "json_body",
    "npy_body",
]

# Every server computes the same float32 forward pass (the model's precision) and JSON answers
# may print it with fewer digits (the shortest that read back as the same float32), so answers
# agree to float32 rounding; a wrong weight or formula shows up as differences near 1e-2.
TOLERANCE = 1e-6  # relative and absolute

JSON_TYPE = "application/json"
NPY_TYPE = "application/x-npy"
N_FEATURES = 64
N_LATENT = 2


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


def json_body(rows: NDArray[np.float64]) -> bytes:
    """``{"vectors": [[...], ...]}`` for pixel rows, as the Python client sends it."""
    return orjson.dumps({"vectors": np.asarray(rows, dtype=np.float64).tolist()})


def npy_body(rows: NDArray[np.float64], dtype: type[np.floating] = np.float32) -> bytes:
    """The bytes of ``np.save`` of ``rows`` as a C-contiguous array of ``dtype``."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(rows, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()


def _post(client: httpx.Client, path: str, body: bytes, content_type: str) -> httpx.Response:
    headers = {"Content-Type": content_type, "Accept": content_type}
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
