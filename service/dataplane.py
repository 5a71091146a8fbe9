"""The data plane: one inference, whatever protocol brought it.

Every protocol (:mod:`service.protocols`) translates bytes to ``(model, signature, array,
outputs)`` and back; everything in between happens here, once: finding the model in the
repository (404), the batch limit (413), the values (422: finite, in range, with row and
column) and the computation of just the outputs asked for; the :class:`Inference` it returns
says which model answered and how many rows, for the metrics and the access log. Modelled on
MLServer's ``handlers/dataplane.py``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import numpy as np
from numpy.typing import NDArray

from service.arrivals import ARRIVALS
from service.artifact import ArtifactError
from service.errors import RequestError
from service.observability import observe_scores, set_model_info
from service.operations import (
    AUTOENCODER,
    SIGNATURES,
    Signature,
    check_values,
    in_range,
    too_many_rows,
)
from service.repository import Repository, ServedModel, load_repository, version_order

__all__ = ["DataPlane", "Inference"]

logger = logging.getLogger("digitcode")

Array = NDArray[np.float64]  # float32 or float64 as sent, typed as in service.model

BATCH_ROWS = 64  # requests of at most this many rows may share a forward pass
# Requests in one batch at most: with 32 connections, unbounded batches raised requests/s by
# 10 % more than batches of 8 but tripled the p99 latency (17 ms -> 55-73 ms).
BATCH_REQUESTS = 8


@dataclass(slots=True)  # one per request: not frozen, whose __init__ costs more
class Inference:
    """The outcome of one inference: which model answered, the outputs asked for, and when the
    model started and finished computing them (``time.perf_counter()``, for ``Server-Timing``;
    for a batched request, those of its batch, and when it waited and went on)."""

    served: ServedModel
    outputs: dict[str, Array]
    rows: int
    started: float = 0.0
    finished: float = 0.0
    queued: float = 0.0  # batched: when the request began to wait for its batch
    resumed: float = 0.0  # batched: when the request went on with its answer


class DataPlane:
    """The served repository and the one inference path below every protocol.

    Parameters
    ----------
    model_dir : path
        An artifact or a repository (see :mod:`service.repository`).
    default_model : str
        The model the native endpoints serve.
    max_batch : int
        Most rows in one request.
    outlier_quantile : float
        Which calibrated threshold flags outliers.
    """

    def __init__(
        self, model_dir: Path, default_model: str, max_batch: int, outlier_quantile: float = 0.99
    ) -> None:
        self.model_dir = model_dir
        self.default_model = default_model
        self.max_batch = max_batch
        self.outlier_quantile = outlier_quantile
        self.repository: Repository | None = None
        self._waiting: list[_Waiting] = []
        # Batched answers are the same to the last bit as computed alone (see _compute_kinds);
        # off, every request is computed on its own.
        self.batching = True

    # -- the repository --------------------------------------------------------------------

    def load(self, repository: Repository | None = None) -> bool:
        """Load (or re-read) the repository and serve it; keep the old one if it fails.

        A version that does not load is refused with one log line and the rest are served.
        Requests in flight finish with the model they started with. Returns whether the
        repository was (re)loaded.
        """
        old = self.repository
        if repository is None:
            try:
                repository, refused = load_repository(
                    self.model_dir, self.default_model, self.outlier_quantile
                )
            except ArtifactError as exc:
                if old is None:
                    raise
                logger.error("reload refused, still serving the previous models: %s", exc)
                return False
            for problem in refused:
                logger.error("model refused: %s", problem)
        self.repository = repository
        if old is not None:
            for served in old:
                set_model_info(served, serving=False)
        for served in repository:
            set_model_info(served, serving=True)
        logger.info(
            "serving models %s",
            ", ".join(f"{s.name}/{s.version}" for s in repository),
            extra={"model_dir": str(self.model_dir)},
        )
        return True

    def _repository(self) -> Repository:
        repository = self.repository
        if repository is None:
            raise RequestError(503, "Model not loaded yet")
        return repository

    def native_model(self) -> ServedModel:
        """The newest version of the default model: what ``/encode`` and friends serve."""
        return self._repository().get(None)

    def resolve(self, name: str, version: str | None) -> tuple[ServedModel, Signature]:
        """The Open Inference Protocol model ``name``: a repository model plus a signature's
        suffix (``<model>`` for the autoencoder, ``<model>-decoder`` for the decoder).

        Parameters
        ----------
        name : str
            The OIP model name, as in the URL.
        version : str or None
            The version; None for the newest.

        Returns
        -------
        served : ServedModel
        signature : Signature

        Raises
        ------
        RequestError
            404 naming the unknown model or version as the request named it.
        """
        repository = self._repository()
        for signature in SIGNATURES:
            if name.endswith(signature.suffix):
                base = name[: len(name) - len(signature.suffix)]
                if base in repository.models:
                    return repository.get(base, version, label=name), signature
        return repository.get(name, version), AUTOENCODER  # 404 naming it

    def versions(self, name: str) -> list[str]:
        """The versions of repository model ``name`` (empty if unknown)."""
        return sorted(self._repository().models.get(name, {}), key=version_order)

    # -- inference -------------------------------------------------------------------------

    async def infer(
        self,
        served: ServedModel,
        signature: Signature,
        X: Array,
        wanted: frozenset[str],
        loc: list[str | int],
    ) -> Inference:
        """Check ``X`` (as sent) and compute the outputs in ``wanted``.

        Requests of at most :data:`BATCH_ROWS` rows that reach this point in the same turn of
        the event loop are computed together, up to :data:`BATCH_REQUESTS` at a time: one range
        check and one forward pass for all those of the same kind and number of rows (when the
        check fails, each request is checked on its own, so an error stays its own), which
        gives each the same answer, to the last bit, as computing it alone. Alone, a request is
        computed at once.

        Parameters
        ----------
        served : ServedModel
        signature : Signature
        X : ndarray of shape (n, signature.input.width)
            Float32 or float64, as the request sent it.
        wanted : frozenset of str
            Output names of ``signature``.
        loc : list
            Where ``X`` is in the request, for error locations.

        Returns
        -------
        Inference
            ``outputs`` holds exactly ``wanted``, in the model's precision.

        Raises
        ------
        RequestError
            413 for more than ``max_batch`` rows, 422 for a value that is not finite or out of
            range (values are checked as sent, before any conversion, so a value just outside
            the range cannot round into it).
        """
        if len(X) > self.max_batch:
            raise too_many_rows(len(X), self.max_batch, loc)
        if not self.batching or len(X) > BATCH_ROWS or not (ARRIVALS.queued or self._waiting):
            check_values(X, signature.input, loc)
            return _compute(served, signature, X, wanted)
        # Other requests arrived in the same turn of the event loop: the ones that reach this
        # point share one forward pass (Triton's dynamic batching, without its timer), computed
        # when the last of them arrives, or the batch is full (or, should neither happen, in
        # the next turn).
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Inference] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._compute_waiting)
        self._waiting.append(_Waiting(served, signature, X, wanted, loc, future, perf_counter()))
        if not ARRIVALS.queued or len(self._waiting) >= BATCH_REQUESTS:
            self._compute_waiting()
        inference = await future
        inference.resumed = perf_counter()
        return inference

    def _compute_waiting(self) -> None:
        """Compute every waiting inference, one forward pass per kind (model, outputs, dtype)."""
        waiting, self._waiting = self._waiting, []
        try:
            _compute_kinds(waiting)
        except BaseException as exc:  # whatever failed, no request is left waiting for ever
            error = exc if isinstance(exc, Exception) else RuntimeError("batch not computed")
            for w in waiting:
                if not w.future.done():
                    w.future.set_exception(error)
            if error is not exc:  # KeyboardInterrupt and the like go on up
                raise


def _compute_kinds(waiting: list[_Waiting]) -> None:
    """Compute the waiting inferences, one forward pass per kind (model, outputs, dtype, rows).

    The requests of a kind are stacked, not concatenated: ``(b, n, width)``, whose forward
    pass makes the same BLAS call for each request as the request alone would (numpy's
    ``matmul`` loops over the first axis), so every answer is the same to the last bit as
    computed alone, whichever requests shared its turn.
    """
    kinds: dict[tuple[int, str, frozenset[str], str, int], list[_Waiting]] = {}
    for w in waiting:
        key = (id(w.served), w.signature.suffix, w.wanted, w.X.dtype.str, len(w.X))
        kinds.setdefault(key, []).append(w)
    for kind in kinds.values():
        X, group = _checked(kind)
        if not group:
            continue
        first = group[0]
        try:
            if len(group) == 1:
                results = [_compute(first.served, first.signature, first.X, first.wanted)]
            else:
                whole = _compute(first.served, first.signature, X, first.wanted)
                results = _split(whole, len(first.X))
        except Exception as exc:  # each request answers it as its own
            for w in group:
                if not w.future.done():
                    w.future.set_exception(exc)
            continue
        for w, result in zip(group, results, strict=True):
            if not w.future.done():  # not cancelled meanwhile
                result.queued = w.queued
                w.future.set_result(result)


@dataclass(slots=True)
class _Waiting:
    """One inference waiting for the batch of its event-loop turn (its values are checked
    with the batch's)."""

    served: ServedModel
    signature: Signature
    X: Array
    wanted: frozenset[str]
    loc: list[str | int]
    future: asyncio.Future[Inference]
    queued: float  # when it began to wait (perf_counter)


def _checked(kind: list[_Waiting]) -> tuple[Array, list[_Waiting]]:
    """The stacked rows ``(b, n, width)`` of a kind's valid requests (when at least two), and
    those requests; each other one gets its own 422. All valid (the usual case) costs one range
    check for the whole kind."""
    spec = kind[0].signature.input
    if len(kind) > 1:
        X = np.stack([w.X for w in kind])
        if in_range(X, spec):
            return X, kind
    valid = []
    for w in kind:
        try:
            check_values(w.X, spec, w.loc)
        except RequestError as exc:
            if not w.future.done():
                w.future.set_exception(exc)
            continue
        valid.append(w)
    return np.stack([w.X for w in valid]) if len(valid) > 1 else kind[0].X, valid


def _compute(
    served: ServedModel, signature: Signature, X: Array, wanted: frozenset[str]
) -> Inference:
    """The outputs ``wanted`` of checked rows ``X``, ``(n, width)``, or of ``b`` stacked
    requests, ``(b, n, width)`` (``rows`` is then ``b``); every reconstruction error is
    scored."""
    started = perf_counter()
    computed = signature.compute(served.model, X, wanted)
    errors = computed.get("error")
    if errors is not None:  # every reconstruction is scored, whatever was asked for
        observe_scores(served, errors, computed["is_outlier"])
    if len(computed) != len(wanted):  # computed more than asked for (a by-product)
        computed = {k: computed[k] for k in wanted}
    return Inference(served, computed, len(X), started, perf_counter())


def _split(whole: Inference, rows: int) -> list[Inference]:
    """The outputs of stacked requests of ``rows`` rows each (``whole.rows`` of them), one
    inference each (views, C-contiguous)."""
    return [
        Inference(
            whole.served,
            {name: value[i] for name, value in whole.outputs.items()},
            rows,
            whole.started,
            whole.finished,
        )
        for i in range(whole.rows)
    ]
