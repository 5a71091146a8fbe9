"""Request-scoped helpers shared by the routers: the loaded model, the settings, the body."""

from __future__ import annotations

from fastapi import Request

from service.model import Autoencoder
from service.parsing import JSON_TYPE, RequestError
from service.settings import Settings

__all__ = ["get_model", "read_body", "require_json", "settings_of"]


def settings_of(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_model(request: Request) -> Autoencoder:
    """The loaded model, or 503 while there is none."""
    model: Autoencoder | None = request.app.state.model
    if model is None:
        raise RequestError(503, "Model not loaded yet")
    return model


def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != JSON_TYPE:
        shown = content_type or "none"
        raise RequestError.one(
            415,
            ["header", "content-type"],
            f"Content-Type must be {JSON_TYPE} (got {shown})",
            "unsupported_media_type",
        )


async def read_body(request: Request) -> bytes:
    """The request body, refusing (413) as soon as it exceeds the configured limit.

    The limit is checked against Content-Length before reading and again while streaming, so an
    oversized body is never buffered in full.
    """
    limit = settings_of(request).body_limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> RequestError:
    return RequestError.one(
        413, ["body"], f"Request body exceeds the limit of {limit} bytes", "body_too_large"
    )
