"""Sync and async clients: numpy arrays in, numpy arrays out, large arrays split into batches."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, NamedTuple, Self

import httpx
import numpy as np
from numpy.typing import ArrayLike, NDArray

from digitcode._exceptions import APIError, ClientError, ServerError, TransportError, shift_rows
from digitcode._operations import OPERATIONS, OUTLIERS, Operation

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_URL", "AsyncClient", "Client", "Outliers"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_BATCH_SIZE = 1000
# From this many rows per request, batches go as .npy: no JSON encoding or parsing on
# either side. Either way the answers hold the model's values (JSON prints them with the
# digits of the model's precision).
DEFAULT_BINARY_FROM = 100
NPY_TYPE = "application/x-npy"

Array = NDArray[np.float64]
Progress = Callable[[int], None]


class Outliers(NamedTuple):
    """What :meth:`Client.outliers` answers for ``n`` vectors.

    Attributes
    ----------
    vectors : ndarray of shape (n, 64)
        The reconstructions, as :meth:`Client.reconstruct` gives them.
    errors : ndarray of shape (n,)
        Each vector's reconstruction error (scaled units).
    is_outlier : ndarray of bool, shape (n,)
        Whether the vector is an outlier: its error above the threshold, or its distance to
        the model's prototypes above theirs (``POST /reconstruct`` in JSON has the distances).
    threshold : ndarray of shape (n,)
        The error threshold each vector was judged by: the model's calibrated one (the same for
        all unless the service reloaded another model between two batches).
    """

    vectors: Array
    errors: Array
    is_outlier: NDArray[np.bool_]
    threshold: Array


def _as_matrix(data: ArrayLike, width: int) -> Array:
    array = np.asarray(data, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"expected an array of shape (n, {width}), got {array.shape}")
    return array


def _batches(array: Array, batch_size: int) -> Iterator[tuple[int, Array]]:
    for start in range(0, len(array), batch_size):
        yield start, array[start : start + batch_size]


def _in_batch_at(start: int, exc: APIError) -> APIError:
    """The same error with its row numbers counted from the whole input."""
    return type(exc)(exc.status_code, shift_rows(exc.detail, start))


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    error = ClientError if response.status_code < 500 else ServerError
    raise error(response.status_code, detail)


def _request_args(op: Operation, batch: Array, binary: bool) -> dict[str, Any]:
    if binary:
        buffer = io.BytesIO()
        np.save(buffer, batch, allow_pickle=False)
        return {
            "content": buffer.getvalue(),
            "headers": {"Content-Type": NPY_TYPE, "Accept": op.npy_accept},
        }
    return {"json": {op.input_key: batch.tolist()}}


def _answer(op: Operation, response: httpx.Response) -> list[Array]:
    """The arrays in one answer, in the order of ``op.outputs``."""
    if response.headers.get("content-type", "").startswith(NPY_TYPE):
        array = np.load(io.BytesIO(response.content), allow_pickle=False).astype(np.float64)
        # The outputs side by side as columns: /reconstruct is (n, 65), pixels then error.
        arrays = [array[:, where] for where in op.column_slices()]
    else:
        payload = response.json()
        arrays = [np.asarray(payload[key], dtype=np.float64) for key, _ in op.outputs]
    if op.threshold:
        threshold = float(response.headers["x-outlier-threshold"])
        arrays.append(np.full(len(arrays[0]), threshold))
    return arrays


def _outliers(arrays: list[Array]) -> Outliers:
    vectors, errors, flags, threshold = arrays
    return Outliers(vectors.reshape(-1, 64), errors, flags.astype(bool), threshold)


def _join(parts: list[list[Array]], op: Operation) -> list[Array]:
    if not parts:  # what an endpoint answers for zero rows, without asking it
        return [np.empty(shape) for shape in op.empty_shapes()]
    return [np.concatenate(arrays) for arrays in zip(*parts, strict=True)]


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


class Client:
    """A synchronous digitcode client.

    Parameters
    ----------
    base_url : str
        Where the service listens, e.g. ``http://127.0.0.1:8000``.
    batch_size : int
        Rows per request; larger arrays are split and the answers joined.
    binary_from : int or None
        Requests of at least this many rows travel as ``.npy`` instead of JSON (None: never).
    timeout : float
        Seconds per request.
    api_key : str, optional
        Sent as ``X-API-Key``.
    transport : httpx.BaseTransport, optional
        For tests, e.g. ``httpx.MockTransport``.

    Examples
    --------
    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     Z = client.encode(X)            # X of shape (n, 64) -> Z of shape (n, 2)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        binary_from: int | None = DEFAULT_BINARY_FROM,
        timeout: float = 30.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.binary_from = binary_from
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, headers=_headers(api_key), transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {self._http.base_url.join(path)}: {exc}") from exc
        _raise_for_status(response)
        return response

    def _batched(
        self, name: str | Operation, data: ArrayLike, progress: Progress | None
    ) -> list[Array]:
        op = OPERATIONS[name] if isinstance(name, str) else name
        parts = []
        for start, batch in _batches(_as_matrix(data, op.input_width), self.batch_size):
            binary = self.binary_from is not None and len(batch) >= self.binary_from
            try:
                response = self._send("POST", op.path, **_request_args(op, batch, binary))
            except APIError as exc:
                raise _in_batch_at(start, exc) from None
            parts.append(_answer(op, response))
            if progress is not None:
                progress(len(batch))
        return _join(parts, op)

    def encode(self, X: ArrayLike, progress: Progress | None = None) -> Array:
        """Latent codes: ``X`` of shape (n, 64), pixels 0..16 → ndarray of shape (n, 2)."""
        return self._batched("encode", X, progress)[0].reshape(-1, 2)

    def decode(self, Z: ArrayLike, progress: Progress | None = None) -> Array:
        """Pixel vectors: ``Z`` of shape (n, 2) → ndarray of shape (n, 64)."""
        return self._batched("decode", Z, progress)[0].reshape(-1, 64)

    def reconstruct(self, X: ArrayLike, progress: Progress | None = None) -> tuple[Array, Array]:
        """Reconstructions of shape (n, 64) and errors of shape (n,) for ``X`` of shape (n, 64)."""
        X_hat, errors = self._batched("reconstruct", X, progress)
        return X_hat.reshape(-1, 64), errors

    def outliers(self, X: ArrayLike, progress: Progress | None = None) -> Outliers:
        """:meth:`reconstruct` with outlier flags: ``X`` of shape (n, 64) → :class:`Outliers`."""
        return _outliers(self._batched(OUTLIERS, X, progress))

    def model_info(self) -> dict[str, Any]:
        """The served model's manifest."""
        info: dict[str, Any] = self._send("GET", "/model").json()
        return info

    def ready(self) -> bool:
        """True when the service answers ``/readyz`` with 200."""
        try:
            self._send("GET", "/readyz")
        except (TransportError, ServerError):
            return False
        return True


class AsyncClient:
    """The asynchronous twin of :class:`Client`, with the same parameters and methods."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        binary_from: int | None = DEFAULT_BINARY_FROM,
        timeout: float = 30.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.binary_from = binary_from
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=_headers(api_key), transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {self._http.base_url.join(path)}: {exc}") from exc
        _raise_for_status(response)
        return response

    async def _batched(
        self, name: str | Operation, data: ArrayLike, progress: Progress | None
    ) -> list[Array]:
        op = OPERATIONS[name] if isinstance(name, str) else name
        parts = []
        for start, batch in _batches(_as_matrix(data, op.input_width), self.batch_size):
            binary = self.binary_from is not None and len(batch) >= self.binary_from
            try:
                response = await self._send("POST", op.path, **_request_args(op, batch, binary))
            except APIError as exc:
                raise _in_batch_at(start, exc) from None
            parts.append(_answer(op, response))
            if progress is not None:
                progress(len(batch))
        return _join(parts, op)

    async def encode(self, X: ArrayLike, progress: Progress | None = None) -> Array:
        """Latent codes: ``X`` of shape (n, 64), pixels 0..16 → ndarray of shape (n, 2)."""
        return (await self._batched("encode", X, progress))[0].reshape(-1, 2)

    async def decode(self, Z: ArrayLike, progress: Progress | None = None) -> Array:
        """Pixel vectors: ``Z`` of shape (n, 2) → ndarray of shape (n, 64)."""
        return (await self._batched("decode", Z, progress))[0].reshape(-1, 64)

    async def reconstruct(
        self, X: ArrayLike, progress: Progress | None = None
    ) -> tuple[Array, Array]:
        """Reconstructions of shape (n, 64) and errors of shape (n,) for ``X`` of shape (n, 64)."""
        X_hat, errors = await self._batched("reconstruct", X, progress)
        return X_hat.reshape(-1, 64), errors

    async def outliers(self, X: ArrayLike, progress: Progress | None = None) -> Outliers:
        """:meth:`reconstruct` with outlier flags: ``X`` of shape (n, 64) → :class:`Outliers`."""
        return _outliers(await self._batched(OUTLIERS, X, progress))

    async def model_info(self) -> dict[str, Any]:
        """The served model's manifest."""
        info: dict[str, Any] = (await self._send("GET", "/model")).json()
        return info

    async def ready(self) -> bool:
        """True when the service answers ``/readyz`` with 200."""
        try:
            await self._send("GET", "/readyz")
        except (TransportError, ServerError):
            return False
        return True
