"""Each server's own JSON: the request bodies wrk sends and how the answers are read.

Every server is asked the same two questions, the codes of some pixel rows (``encode``) and
their reconstructions with errors (``reconstruct``), in its own native format:

=============  ==========================================  ===================================
server         request                                     answer
=============  ==========================================  ===================================
``digitcode``  ``POST /encode``, ``/reconstruct``:         ``{"latent": ...}``;
               ``{"vectors": [[64 numbers], ...]}``        ``{"vectors": ..., "errors": ...}``
``mlflow``     ``POST /invocations``: ``{"inputs": [...],  ``{"predictions": [[z1, z2], ...]}``;
               "params": {"output": "encode"}}``           ``{"predictions": {"vectors": ...,
               (or ``"reconstruct"``)                      "errors": ...}}``
``bentoml``    ``POST /encode``, ``/reconstruct``:         ``[[z1, z2], ...]``;
               ``{"vectors": [...]}`` (the parameter's     ``{"vectors": ..., "errors": ...}``
               name)
``litserve``   ``POST /encode``, ``/reconstruct``:         ``{"latent": ...}``;
               ``{"vectors": [...]}``                      ``{"vectors": ..., "errors": ...}``
=============  ==========================================  ===================================

The numbers are written as :func:`benchmarks.answers.json_body` writes them (orjson, float64),
so every body carries the same text for the rows. :func:`fetch_answers` posts a server's
bodies and parses its answers into :class:`benchmarks.answers.Answers`, through an
:class:`httpx.Client` (a live server, or an :class:`httpx.MockTransport` in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray

from benchmarks.answers import JSON_TYPE, AnswerMismatchError, Answers

__all__ = [
    "FORMATS",
    "OPERATIONS",
    "Format",
    "Operation",
    "fetch_answers",
]

Operation = Literal["encode", "reconstruct"]
OPERATIONS: tuple[Operation, ...] = ("encode", "reconstruct")
Array = NDArray[np.float64]


def _rows(rows: Array) -> list[list[float]]:
    as_list: list[list[float]] = np.asarray(rows, dtype=np.float64).tolist()
    return as_list


def _vectors_body(rows: Array, operation: Operation) -> bytes:
    return orjson.dumps({"vectors": _rows(rows)})


def _mlflow_body(rows: Array, operation: Operation) -> bytes:
    return orjson.dumps({"inputs": _rows(rows), "params": {"output": operation}})


def _get(answer: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(answer, dict) or key not in answer:
            raise AnswerMismatchError(f"answer has no {key!r} ({str(answer)[:120]})")
        answer = answer[key]
    return answer


@dataclass(frozen=True)
class Format:
    """How one server is asked and how its answers are read.

    Attributes
    ----------
    paths : dict
        The path of each operation.
    body : callable
        ``body(rows, operation)``: the request body (bytes of JSON).
    latent : callable
        The codes in an ``encode`` answer (parsed JSON).
    reconstruction : callable
        The reconstructions and the errors in a ``reconstruct`` answer (parsed JSON).
    """

    paths: dict[Operation, str]
    body: Callable[[Array, Operation], bytes]
    latent: Callable[[Any], Any]
    reconstruction: Callable[[Any], tuple[Any, Any]]


_NATIVE_PATHS: dict[Operation, str] = {"encode": "/encode", "reconstruct": "/reconstruct"}


def _vectors_errors(answer: Any) -> tuple[Any, Any]:
    return _get(answer, "vectors"), _get(answer, "errors")


FORMATS: dict[str, Format] = {
    "digitcode": Format(_NATIVE_PATHS, _vectors_body, lambda a: _get(a, "latent"), _vectors_errors),
    "mlflow": Format(
        {"encode": "/invocations", "reconstruct": "/invocations"},
        _mlflow_body,
        lambda a: _get(a, "predictions"),
        lambda a: _vectors_errors(_get(a, "predictions")),
    ),
    "bentoml": Format(_NATIVE_PATHS, _vectors_body, lambda a: a, _vectors_errors),
    "litserve": Format(_NATIVE_PATHS, _vectors_body, lambda a: _get(a, "latent"), _vectors_errors),
}


def _matrix(value: Any, ndim: int, width: int | None, label: str) -> Array:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnswerMismatchError(f"{label}: not a numeric array ({exc})") from None
    if array.ndim != ndim or (width is not None and array.shape[1] != width):
        raise AnswerMismatchError(f"{label}: unexpected shape {array.shape}")
    return array


def _post(client: httpx.Client, path: str, body: bytes, label: str) -> Any:
    response = client.post(
        path, content=body, headers={"Content-Type": JSON_TYPE, "Accept": JSON_TYPE}
    )
    if response.status_code != 200:
        raise AnswerMismatchError(
            f"{label}: POST {path} answered {response.status_code}: {response.text[:200]}"
        )
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise AnswerMismatchError(f"{label}: answer is not JSON ({exc})") from None


def fetch_answers(
    client: httpx.Client, server: str, bodies: dict[Operation, bytes], *, latent_size: int = 2
) -> Answers:
    """POST a server's ``encode`` and ``reconstruct`` bodies and parse its answers.

    Parameters
    ----------
    client : httpx.Client
        With the server's base URL.
    server : str
        A key of :data:`FORMATS`.
    bodies : dict
        The exact bytes to send for each operation (those wrk sends).
    latent_size : int
        Width of the codes.

    Raises
    ------
    AnswerMismatchError
        If an answer is not 200, not JSON, or not the server's documented shape.
    """
    fmt = FORMATS[server]
    label = f"{server} encode"
    latent = _matrix(
        fmt.latent(_post(client, fmt.paths["encode"], bodies["encode"], label)),
        2,
        latent_size,
        label,
    )
    label = f"{server} reconstruct"
    vectors, errors = fmt.reconstruction(
        _post(client, fmt.paths["reconstruct"], bodies["reconstruct"], label)
    )
    return Answers(
        latent=latent,
        vectors=_matrix(vectors, 2, 64, f"{label} vectors"),
        errors=_matrix(errors, 1, None, f"{label} errors"),
    )
