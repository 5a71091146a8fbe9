"""Service settings, read from ``DIGITCODE_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.connections import Limits

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "WORKER_BASE_MEMORY",
    "Settings",
    "budget_for",
    "container_memory_limit",
    "get_settings",
]

# What one worker needs besides its requests: Python, numpy, the app and the models (about
# 66 MB measured idle), and the connections' buffers; and the budget when no limit is known.
WORKER_BASE_MEMORY = 96 << 20
DEFAULT_MEMORY_BUDGET = 160 << 20
MIN_MEMORY_BUDGET = 16 << 20


class Settings(BaseSettings):
    """All service settings; each field ``name`` is read from ``DIGITCODE_NAME``."""

    model_config = SettingsConfigDict(env_prefix="DIGITCODE_", extra="ignore")

    model_dir: Path = Field(
        Path("models/default"),
        description="An artifact directory, or a repository of <model>/<version>/ artifacts.",
    )
    default_model: str = Field(
        "digitcode",
        min_length=1,
        description="The repository model the native endpoints (/encode, ...) serve.",
    )
    outlier_quantile: float = Field(
        0.99,
        gt=0,
        lt=1,
        description="Which calibrated thresholds flag outliers: a vector whose error or distance "
        "to the prototypes is above this quantile of held-out digits' (one the model's "
        "calibration bounds: 0.5, 0.9, 0.95, 0.99).",
    )
    max_batch: int = Field(10_000, ge=1, description="Most vectors or codes in one request.")
    max_body_bytes: int | None = Field(
        None,
        ge=1,
        description="Largest request body accepted; default fits max_batch vectors of "
        "full-precision floats in JSON.",
    )
    max_concurrency: int = Field(
        64, ge=1, description="Requests in flight per worker before answering 503."
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, every endpoint but the probes and the API docs requires X-API-Key.",
    )
    host: str = Field("127.0.0.1", description="Interface `python -m service` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `python -m service` listens on.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level."
    )
    log_format: Literal["json", "plain"] = Field(
        "json", description="One JSON object per line, or plain text."
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Worker processes `python -m service` starts (default: CPU cores).",
    )
    worker_timeout: int = Field(
        30,
        ge=1,
        description="With workers > 1: seconds a new worker gets to become ready (on SIGHUP, "
        "or replacing one that died) and a running one to answer the supervisor's health "
        "check, before it is killed.",
    )
    shutdown_timeout: int = Field(
        30, ge=1, description="Seconds to let in-flight requests finish after SIGTERM."
    )
    drain_seconds: float = Field(
        5.0,
        ge=0,
        description="After SIGTERM, seconds to keep serving (readiness 503, Connection: close) "
        "before closing the listener.",
    )
    memory_budget_bytes: int | None = Field(
        None,
        ge=1,
        description="Memory in-flight requests may need at once, per worker; beyond it 503. "
        "Default: the container's memory limit per worker minus 96 MiB, or 160 MiB.",
    )
    max_connections: int = Field(
        1024, ge=1, description="Open connections per worker; a new one beyond it gets 503."
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request line plus headers; beyond it 431."
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a request's headers may take to arrive; then 408."
    )
    body_min_rate: float = Field(
        240.0, gt=0, description="Bytes per second a body must average after the grace period."
    )
    body_grace: float = Field(
        5.0, ge=0, description="Seconds of a body before its minimum rate applies."
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds a request's body may take to arrive in all; then 408."
    )

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_no_key(cls, value: SecretStr | None) -> SecretStr | None:
        # DIGITCODE_API_KEY= (empty) must not mean "the empty string is the key".
        return value if value is not None and value.get_secret_value() else None

    @property
    def body_limit(self) -> int:
        """The effective body limit in bytes."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        # 64 numbers of up to 24 characters each ("0.123456789012345678, ") per row, plus slack.
        return self.max_batch * 64 * 24 + 65_536

    @property
    def memory_budget(self) -> int:
        """The effective per-worker memory budget in bytes."""
        if self.memory_budget_bytes is not None:
            return self.memory_budget_bytes
        return budget_for(container_memory_limit(), self.workers)

    def connection_limits(self) -> Limits:
        """The limits :mod:`service.connections` applies to each connection."""
        return Limits(
            max_connections=self.max_connections,
            max_header_bytes=self.max_header_bytes,
            header_timeout=self.header_timeout,
            body_min_rate=self.body_min_rate,
            body_grace=self.body_grace,
            body_timeout=self.body_timeout,
        )


def budget_for(limit: int | None, workers: int) -> int:
    """Each worker's memory budget in a container limited to ``limit`` bytes (None: no limit)."""
    if limit is None:
        return DEFAULT_MEMORY_BUDGET
    return max(limit // workers - WORKER_BASE_MEMORY, MIN_MEMORY_BUDGET)


def container_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """This container's memory limit in bytes (cgroup v2 or v1), or None if it has none."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "no limit" with a huge number
            return int(text)
        return None
    return None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
