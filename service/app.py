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
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.accesslog import ACCESS_LOG
from service.admission import Admission
from service.dataplane import DataPlane
from service.draining import Drain
from service.endpoints import InferenceEndpoints
from service.errors import RequestError, error_style
from service.middleware import ApiKeyMiddleware, ConcurrencyLimitMiddleware
from service.observability import ObservabilityMiddleware, configure_logging
from service.openapi import build_openapi
from service.operations import (
    DOCS_ASSETS,
    DOCS_ASSETS_PREFIX,
    DOCS_URL,
    EXPLORER_ASSETS,
    EXPLORER_ASSETS_PREFIX,
    EXPLORER_URL,
    OPENAPI_URL,
    REDOC_URL,
)
from service.repository import Repository
from service.routers import metrics, oip, probes
from service.settings import Settings, get_settings
from service.tuning import keep_freed_memory

__all__ = ["app", "create_app", "reload_models"]

logger = logging.getLogger("digitcode")


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    style = error_style(request.url.path)
    return Response(
        exc.body(style),
        exc.status_for(style),
        headers=exc.headers(),
        media_type="application/json",
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    # FastAPI's own 404 and 405, in the OIP format under /v2.
    assert isinstance(exc, StarletteHTTPException)
    if error_style(request.url.path) == "native":
        return await http_exception_handler(request, exc)
    error = RequestError(exc.status_code, str(exc.detail), dict(exc.headers or {}))
    return await _request_error(request, error)


def reload_models(application: FastAPI) -> bool:
    """Re-read the model directory and serve what it holds; keep the old models if it fails.

    New versions appear, removed ones answer 404, a broken one is refused with one log line
    while the rest keep serving. Requests in flight finish with the model they started with.
    """
    dataplane: DataPlane = application.state.dataplane
    return dataplane.load()


def _install_sighup(callback: Callable[[], object]) -> bool:
    # Only where the loop can take signals (the main thread; not inside test clients).
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


# Swagger UI and ReDoc, vendored with their licenses and sha256 (static/docs/README.md), and
# the explorer page (static/explorer, written here).
_STATIC = Path(__file__).resolve().parent / "static"
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
}
# The pages reference no other host; this keeps the browser to it for what their scripts would
# load (ReDoc shows the Redocly logo from a CDN; Swagger UI's validator badge is switched off).
_DOCS_CSP = "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'"
# The explorer loads nothing but its own module, style sheet and the service's API.
_EXPLORER_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _add_assets(application: FastAPI, prefix: str, names: frozenset[str], directory: Path) -> None:
    """``GET <prefix><name>`` for each of ``names``: files of ``directory``, nothing else."""

    @application.get(prefix + "{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in names:  # only these: not the licenses, never another path
            raise StarletteHTTPException(404)
        path = directory / name
        return FileResponse(
            path,
            media_type=_MEDIA_TYPES[path.suffix],
            headers={"X-Content-Type-Options": "nosniff"},
        )


def _add_explorer(application: FastAPI) -> None:
    """The latent-space explorer at ``/`` (static HTML, CSS and a JavaScript module that calls
    the API with relative URLs, so it works under any ``root_path``)."""
    page = (_STATIC / "explorer" / "index.html").read_bytes()

    @application.get(EXPLORER_URL, include_in_schema=False)
    async def explorer() -> Response:
        return Response(
            page,
            media_type=_MEDIA_TYPES[".html"],
            headers={"Content-Security-Policy": _EXPLORER_CSP, "X-Content-Type-Options": "nosniff"},
        )

    _add_assets(application, EXPLORER_ASSETS_PREFIX, EXPLORER_ASSETS, _STATIC / "explorer")


def _add_docs(application: FastAPI) -> None:
    """Swagger UI at ``/docs`` and ReDoc at ``/redoc``, their assets served by this package.

    Everything is loaded from the service (under the ASGI ``root_path``, as FastAPI's own docs
    are), so the docs work offline. With an API key set, Swagger UI's "Authorize" button takes
    it (the OpenAPI document declares the ``APIKey`` scheme).
    """

    def prefix(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @application.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        assets = root + DOCS_ASSETS_PREFIX
        page = get_swagger_ui_html(
            openapi_url=root + OPENAPI_URL,
            title=f"{application.title} - Swagger UI",
            swagger_js_url=assets + "swagger-ui-bundle.js",
            swagger_css_url=assets + "swagger-ui.css",
            swagger_favicon_url=assets + "favicon-32x32.png",
            oauth2_redirect_url=None,
            # Its default badge would send the schema's URL to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = _DOCS_CSP
        return page

    @application.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_redoc_html(
            openapi_url=root + OPENAPI_URL,
            title=f"{application.title} - ReDoc",
            redoc_js_url=root + DOCS_ASSETS_PREFIX + "redoc.standalone.js",
            redoc_favicon_url=root + DOCS_ASSETS_PREFIX + "favicon-32x32.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = _DOCS_CSP
        return page

    _add_assets(application, DOCS_ASSETS_PREFIX, DOCS_ASSETS, _STATIC / "docs")


def create_app(settings: Settings | None = None, repository: Repository | None = None) -> FastAPI:
    """Build the application.

    Parameters
    ----------
    settings : Settings, optional
        Defaults to :func:`service.settings.get_settings` (the environment).
    repository : Repository, optional
        Already loaded models, served at once; if None, ``settings.model_dir`` is loaded when
        the app starts (lifespan), not at import.
    """
    settings = settings or get_settings()
    dataplane = DataPlane(
        settings.model_dir, settings.default_model, settings.max_batch, settings.outlier_quantile
    )
    dataplane.repository = repository  # served at once (transports that run no lifespan)
    drain = Drain(settings.drain_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Here, not in __main__: with several workers each process runs its own lifespan.
        configure_logging(settings.log_level, settings.log_format)
        keep_freed_memory()
        dataplane.load(repository)
        reload_on_hup = _install_sighup(lambda: reload_models(app))
        drains = drain.install()  # after uvicorn's own handlers, in front of them
        yield
        ACCESS_LOG.flush_at_exit()  # the last requests' lines, before the process ends
        if drains:
            drain.uninstall()
        if reload_on_hup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    application = FastAPI(
        title="digitcode",
        summary="Encode 8×8 handwritten-digit vectors to a 2-D latent space and back.",
        description=(
            "All vectors are 64 pixel values in [0, 16] (row-major 8×8, the UCI optdigits "
            "units); latent codes are 2 numbers. Native bodies are JSON or `.npy` "
            "(`application/x-npy`); the Open Inference Protocol (KServe V2) is served under "
            "`/v2`, with binary tensors. Every response carries `X-Model-Version`."
        ),
        version="0.1.0",
        # FastAPI's native OpenTelemetry asks the global providers whether anything is
        # configured on every request (about 9 µs, as much as the forward pass of one vector);
        # the service configures none and exports Prometheus metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        lifespan=lifespan,
        openapi_url=OPENAPI_URL,
        docs_url=None,  # served by _add_docs, from this package rather than a CDN
        redoc_url=None,
    )
    application.state.settings = settings
    application.state.dataplane = dataplane
    application.state.drain = drain
    # Added innermost first: the version header is on every answer, 401 and 503 included.
    # The inference endpoints sit outside the slot limit: they take a slot once the body is in.
    admission = Admission(settings.max_concurrency, settings.memory_budget)
    application.state.admission = admission
    application.add_middleware(ConcurrencyLimitMiddleware, admission=admission)
    application.add_middleware(
        InferenceEndpoints,
        dataplane=dataplane,
        body_limit=settings.body_limit,
        admission=admission,
    )
    if settings.api_key is not None:
        application.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
    application.add_middleware(ObservabilityMiddleware, dataplane=dataplane, drain=drain)
    application.add_exception_handler(RequestError, _request_error)
    application.add_exception_handler(StarletteHTTPException, _http_error)
    application.include_router(probes.router)
    application.include_router(oip.router)
    application.include_router(metrics.router)
    _add_docs(application)
    _add_explorer(application)
    has_key = settings.api_key is not None
    application.openapi = lambda: build_openapi(application, has_key)  # type: ignore[method-assign]
    return application


app = create_app()
