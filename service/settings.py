"""Service settings, read from ``DIGITCODE_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


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
    shutdown_timeout: int = Field(
        30, ge=1, description="Seconds to let in-flight requests finish after SIGTERM."
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


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
