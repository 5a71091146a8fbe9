"""The FastAPI application: ``create_app(settings)`` builds it, ``app`` is the default one.

``uvicorn service.app:app`` serves the default settings; ``python -m service`` does the same but
checks the model first and exits with one clear line if it cannot be loaded.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi

from service.artifact import ArtifactError
from service.fastpath import InferenceFastPath
from service.middleware import (
    API_KEY_HEADER,
    PROBE_PATHS,
    ApiKeyMiddleware,
    ConcurrencyLimitMiddleware,
)
from service.model import Autoencoder
from service.observability import ObservabilityMiddleware, configure_logging, set_model_info
from service.parsing import RequestError
from service.routers import inference, metrics, probes
from service.settings import Settings, get_settings

__all__ = ["app", "create_app", "reload_model"]

logger = logging.getLogger("digitcode")

_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return Response(
        exc.body(), exc.status_code, headers=exc.headers(), media_type="application/json"
    )


def _openapi(application: FastAPI, settings: Settings) -> dict[str, Any]:
    """The schema, plus what the middleware adds: 503 when busy, 401 and the key scheme."""
    if application.openapi_schema:
        return application.openapi_schema
    schema = get_openapi(
        title=application.title,
        version=application.version,
        summary=application.summary,
        description=application.description,
        routes=application.routes,
    )
    busy = {
        "description": "Model not loaded yet, or too many requests in flight; retry shortly.",
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    }
    unauthorised = {
        "description": f"Missing or invalid {API_KEY_HEADER} header.",
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path in PROBE_PATHS:
                operation["security"] = []
                continue
            operation["responses"].setdefault("503", busy)
            if settings.api_key is not None:
                operation["responses"].setdefault("401", unauthorised)
    if settings.api_key is not None:
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["APIKey"] = {
            "type": "apiKey",
            "in": "header",
            "name": API_KEY_HEADER,
        }
        schema["security"] = [{"APIKey": []}]
    application.openapi_schema = schema
    return schema


def reload_model(application: FastAPI, settings: Settings) -> bool:
    """Load ``settings.model_dir`` again and serve it if it is valid; keep the old one if not.

    Requests in flight finish with the model they started with; the version header changes
    with the first answer from the new model.
    """
    old: Autoencoder | None = application.state.model
    try:
        new = Autoencoder.from_dir(settings.model_dir)
    except ArtifactError as exc:
        logger.error(
            "reload refused, still serving %s: %s",
            old.version if old else None,
            exc,
            extra={"model_version": old.version if old else None},
        )
        return False
    application.state.model = new
    previous = (old.version, str(old.manifest.get("preset", ""))) if old else None
    set_model_info(new.version, str(new.manifest.get("preset", "")), previous)
    logger.info(
        "reloaded: serving model %s (was %s)",
        new.version,
        old.version if old else None,
        extra={"model_version": new.version},
    )
    return True


def _install_sighup(callback: Callable[[], object]) -> bool:
    # Only where the loop can take signals (the main thread; not inside test clients).
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


def create_app(
    settings: Settings | None = None, model: Autoencoder | None = None, fast_path: bool = True
) -> FastAPI:
    """Build the application.

    Parameters
    ----------
    settings : Settings, optional
        Defaults to :func:`service.settings.get_settings` (the environment).
    model : Autoencoder, optional
        An already loaded model; if None, the model is loaded from ``settings.model_dir`` when
        the app starts (lifespan), not at import.
    fast_path : bool
        Serve the inference endpoints through :class:`service.fastpath.InferenceFastPath`
        (same answers, less overhead); False routes them through FastAPI (tests compare both).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Here, not in __main__: with several workers each process runs its own lifespan.
        configure_logging(settings.log_level, settings.log_format)
        if app.state.model is None:
            app.state.model = Autoencoder.from_dir(settings.model_dir)
        model = app.state.model
        set_model_info(model.version, str(model.manifest.get("preset", "")))
        logger.info(
            "serving model %s from %s",
            model.version,
            settings.model_dir,
            extra={"model_version": model.version, "model_dir": str(settings.model_dir)},
        )
        reload_on_hup = _install_sighup(lambda: reload_model(app, settings))
        yield
        if reload_on_hup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    application = FastAPI(
        title="digitcode",
        summary="Encode 8×8 handwritten-digit vectors to a 2-D latent space and back.",
        description=(
            "All vectors are 64 pixel values in [0, 16] (row-major 8×8, the UCI optdigits "
            "units); latent codes are 2 numbers. Bodies are JSON or `.npy` "
            "(`application/x-npy`). Every response carries `X-Model-Version`."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    application.state.settings = settings
    application.state.model = model
    # Added innermost first: the version header is on every answer, 401 and 503 included.
    if fast_path:
        application.add_middleware(InferenceFastPath, state=application.state)
    application.add_middleware(ConcurrencyLimitMiddleware, limit=settings.max_concurrency)
    if settings.api_key is not None:
        application.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
    application.add_middleware(ObservabilityMiddleware, state=application.state)
    application.add_exception_handler(RequestError, _request_error)
    application.include_router(probes.router)
    application.include_router(inference.router)
    application.include_router(metrics.router)
    application.openapi = lambda: _openapi(application, settings)  # type: ignore[method-assign]
    return application


app = create_app()
