"""Prometheus metrics, one structured log line per request, request IDs, the version header.

Metrics work with several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set (``python
-m service`` sets it when it starts more than one worker), prometheus-client keeps each worker's
values in files there and ``/metrics`` adds them up.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.accesslog import ACCESS_LOG, ACCESS_LOGGER
from service.arrivals import ARRIVALS
from service.operations import endpoint_label

if TYPE_CHECKING:
    from service.dataplane import DataPlane
    from service.draining import Drain
    from service.repository import ServedModel

__all__ = [
    "METRICS_CONTENT_TYPE",
    "MULTIPROC_ENV",
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "ObservabilityMiddleware",
    "configure_logging",
    "metrics_payload",
    "observe_scores",
    "record_refusal",
    "set_model_info",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
REQUEST_ID_HEADER = "X-Request-ID"
_NO_MODEL = b"none"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

REQUESTS = Counter(
    "digitcode_requests_total",
    "HTTP requests answered, by the model version that answered (the native one for others).",
    ["endpoint", "method", "status", "model", "model_version"],
)
LATENCY = Histogram(
    "digitcode_request_duration_seconds",
    "Time from receiving a request to the end of its answer.",
    ["endpoint", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
VECTORS = Counter(
    "digitcode_vectors_total",
    "Vectors or codes processed (valid requests only).",
    ["endpoint", "model", "model_version"],
)
BODY_BYTES = Histogram(
    "digitcode_request_body_bytes",
    "Size of request bodies.",
    ["endpoint"],
    buckets=(128, 1024, 8192, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216),
)
IN_FLIGHT = Gauge(
    "digitcode_requests_in_flight", "Requests being served now.", multiprocess_mode="livesum"
)


def _per_model_gauge(name: str, documentation: str, *labels: str) -> Gauge:
    """A gauge per model version, set alike by every worker (so their maximum is its value)."""
    return Gauge(
        name, documentation, ["model", "model_version", *labels], multiprocess_mode="livemax"
    )


MODEL_INFO = _per_model_gauge(
    "digitcode_model_info",
    "The served models: 1 for each version served, 0 for one a reload removed or replaced.",
    "preset",
)

REFUSED = Counter(
    "digitcode_connections_refused_total",
    "Requests or connections cut before the app saw a request, by status and reason.",
    ["status", "reason"],
)
OUTLIERS = Counter(
    "digitcode_outliers_total",
    "Vectors flagged as outliers: reconstruction error or prototype distance above its threshold.",
    ["model", "model_version"],
)
CALIBRATED_ERROR = _per_model_gauge(
    "digitcode_reconstruction_error_calibrated",
    "The error quantiles of the model's held-out digits (its calibration), by quantile.",
    "quantile",
)
OUTLIER_THRESHOLD = _per_model_gauge(
    "digitcode_outlier_threshold",
    "The error above which a vector is an outlier (DIGITCODE_OUTLIER_QUANTILE's bound).",
)
DISTANCE_THRESHOLD = _per_model_gauge(
    "digitcode_outlier_distance_threshold",
    "The distance to the nearest prototype above which a vector is an outlier (same bound).",
)
EXPECTED_OUTLIER_RATIO = _per_model_gauge(
    "digitcode_outlier_expected_ratio",
    "The share of outliers the calibration promises at most on digits like its own: "
    "2 * (1 - quantile), each of its two scores at most 1 - quantile.",
)
ERROR_METRIC = "digitcode_reconstruction_error"
ERROR_HELP = "Reconstruction errors of the vectors scored, buckets at the model's calibration."

access_log = logging.getLogger(ACCESS_LOGGER)  # its level decides; ACCESS_LOG writes


connection_log = logging.getLogger("digitcode.connections")


def record_refusal(status: int, reason: str, client: tuple[str, int] | None) -> None:
    """Count and log one refusal by the connection guards (:mod:`service.connections`).

    ``reason``: ``connection_limit``, ``headers_too_large``, ``header_timeout``, ``idle`` (a
    connection that sent nothing; closed without an answer) or ``body_timeout``.
    """
    REFUSED.labels(str(status), reason).inc()
    level = logging.INFO if reason == "idle" else logging.WARNING  # idle: browsers pre-connect
    if connection_log.isEnabledFor(level):
        peer = f"{client[0]}:{client[1]}" if client else None
        connection_log.log(
            level,
            "refused %s: %d %s",
            peer or "a client",
            status,
            reason,
            extra={"status": status, "reason": reason, "client": peer},
        )


def error_buckets(calibration: dict[str, Any]) -> tuple[float, ...]:
    """Histogram bounds for one model's errors: its calibrated quantiles and thresholds, a few
    multiples of its median (so a shift of the median is measured) and of its largest."""
    quantiles = [float(v) for v in calibration["quantiles"].values()]
    thresholds = [float(v) for v in calibration["thresholds"].values() if v is not None]
    median = float(calibration["quantiles"].get("0.5", min(quantiles)))
    top = max(quantiles + thresholds)
    around = [median * f for f in (0.25, 0.5, 0.75, 1.25, 1.5, 2.0)]
    return tuple(sorted({*quantiles, *thresholds, *around, 2 * top, 4 * top, 8 * top}))


class _Scores:
    """One model version's error histogram (its own buckets) and outlier counter."""

    def __init__(self, served: ServedModel) -> None:
        name, version = served.name, served.version
        self.threshold = served.model.threshold
        # Not registered: every version has other buckets, which one Histogram cannot hold.
        # Multiprocess mode reads them from the workers' files like any metric; in one process
        # _ScoreCollector exposes them.
        # The child's buckets are filled a batch at a time (observe() takes one value).
        histogram = Histogram(
            ERROR_METRIC,
            ERROR_HELP,
            ["model", "model_version"],
            buckets=error_buckets(served.model.manifest["calibration"]),
            registry=None,
        )
        self.histogram = histogram
        child = histogram.labels(name, version)
        self._bounds = np.asarray(child._upper_bounds)
        self._buckets = child._buckets
        self._sum = child._sum
        self._outliers = OUTLIERS.labels(name, version)

    def observe(self, errors: NDArray[Any], is_outlier: NDArray[Any]) -> None:
        """Count ``errors`` (any shape) in the histogram, and the outliers among them."""
        where = np.searchsorted(self._bounds, errors).ravel()
        counts = np.bincount(where, minlength=len(self._bounds))
        for i in np.flatnonzero(counts):
            self._buckets[i].inc(int(counts[i]))
        self._sum.inc(float(errors.sum()))
        flagged = int(np.count_nonzero(is_outlier))
        if flagged:
            self._outliers.inc(flagged)


_SCORES: dict[tuple[str, str], _Scores] = {}


class _ScoreCollector:
    """The per-version error histograms as one metric family (single-process mode)."""

    def collect(self) -> Iterator[Metric]:
        family: Metric | None = None
        for scores in list(_SCORES.values()):
            for metric in scores.histogram.collect():
                if family is None:
                    family = metric
                else:
                    family.samples.extend(metric.samples)
        if family is not None:
            yield family


REGISTRY.register(_ScoreCollector())


def observe_scores(served: ServedModel, errors: NDArray[Any], is_outlier: NDArray[Any]) -> None:
    """Record the errors and outlier flags (both (n,), or (b, n) for a batch of requests) one
    inference computed (see :data:`ERROR_METRIC`, ``OUTLIERS``)."""
    scores = _SCORES.get((served.name, served.version))
    if scores is not None and errors.size:
        scores.observe(errors, is_outlier)


def set_model_info(served: ServedModel, serving: bool) -> None:
    """Mark one model version as served (1) or no longer served (0); publish its calibration."""
    preset = str(served.model.manifest.get("preset", ""))
    name, version = served.name, served.version
    MODEL_INFO.labels(name, version, preset).set(1 if serving else 0)
    model = served.model
    known = _SCORES.get((name, version))
    if not serving or (known is not None and known.threshold == model.threshold):
        return
    _SCORES[(name, version)] = _Scores(served)
    for quantile, value in model.manifest["calibration"]["quantiles"].items():
        CALIBRATED_ERROR.labels(name, version, quantile).set(value)
    if model.threshold is not None and model.outlier_quantile is not None:
        OUTLIER_THRESHOLD.labels(name, version).set(float(model.threshold))
        DISTANCE_THRESHOLD.labels(name, version).set(float(model.distance_threshold or 0.0))
        # Each of the two scores is above its threshold for at most 1 - q of normal rows.
        promised = min(1.0, 2 * (1.0 - model.outlier_quantile))
        EXPECTED_OUTLIER_RATIO.labels(name, version).set(promised)


def metrics_payload() -> bytes:
    """The Prometheus text exposition of this process, or of all workers in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any ``extra`` fields."""

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Send the ``digitcode`` loggers to stderr as JSON lines (``fmt="json"``) or plain text."""
    logger = logging.getLogger("digitcode")
    logger.setLevel(level.upper())
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    logger.addHandler(handler)
    ACCESS_LOG.configure(2, fmt)  # the access lines: same stream, same format, no handler


class ObservabilityMiddleware:
    """Per request: ``X-Model-Version`` and ``X-Request-ID`` (taken or made) on the answer,
    metrics, and one access log line. Outermost, so every answer has them, 401 and 503 too.

    No request body is ever logged. What the data plane served (model, version, rows) comes
    from the inference endpoints through ``scope["state"]``; other answers carry the version of
    the model the native endpoints serve.
    """

    def __init__(self, app: ASGIApp, dataplane: DataPlane, drain: Drain) -> None:
        self.app = app
        self.dataplane = dataplane
        self.drain = drain
        # labels() takes a lock and a lookup per call; the few label sets are kept here.
        self._series: dict[tuple[str, str, int, str, str], tuple[Any, Any]] = {}
        self._per_endpoint: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def _served(self, scope: Scope) -> tuple[str, str]:
        served: ServedModel | None = scope["state"].get("served")
        if served is not None:
            return served.name, served.version
        repository = self.dataplane.repository
        if repository is None:
            return "", ""
        default = repository.get(None)  # what the native endpoints serve
        return default.name, default.version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ARRIVALS.entered()
        started = time.perf_counter()
        request_id = ""
        body_bytes = 0
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.fullmatch(candidate) else ""
            elif name == b"content-length" and value.isdigit():
                body_bytes = int(value)
        request_id = request_id or os.urandom(16).hex()
        scope.setdefault("state", {})
        status = 500
        served = ("", "")

        async def send_with_ids(message: Message) -> None:
            nonlocal status, served
            if message["type"] == "http.response.start":
                status = message["status"]
                served = self._served(scope)
                version = served[1]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-model-version", version.encode() if version else _NO_MODEL),
                    (b"x-request-id", request_id.encode()),
                ]
                if self.drain.draining:  # shutting down: the client's next request goes elsewhere
                    message["headers"].append((b"connection", b"close"))
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            IN_FLIGHT.dec()
            self._record(scope, status, started, request_id, body_bytes, served)

    def _record(
        self,
        scope: Scope,
        status: int,
        started: float,
        request_id: str,
        body_bytes: int,
        served: tuple[str, str],
    ) -> None:
        seconds = time.perf_counter() - started
        path = scope["path"]
        endpoint = endpoint_label(path)
        method = scope["method"]
        vectors = int(scope["state"].get("vectors", 0))
        model, version = served if served[0] else self._served(scope)
        key = (endpoint, method, status, model, version)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                REQUESTS.labels(endpoint, method, str(status), model, version),
                LATENCY.labels(endpoint, method, str(status)),
            )
        series[0].inc()
        series[1].observe(seconds)
        if method == "POST":
            per_key = (endpoint, model, version)
            per_endpoint = self._per_endpoint.get(per_key)
            if per_endpoint is None:
                per_endpoint = self._per_endpoint[per_key] = (
                    BODY_BYTES.labels(endpoint),
                    VECTORS.labels(*per_key),
                )
            per_endpoint[0].observe(body_bytes)
            if vectors:
                per_endpoint[1].inc(vectors)
        if access_log.isEnabledFor(logging.INFO):
            ACCESS_LOG.write(
                ACCESS_LOG.line(method, path, status, seconds, vectors, request_id, model, version)
            )
