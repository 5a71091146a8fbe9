"""Request-scoped helpers shared by the routers: the data plane and the native model."""

from __future__ import annotations

from fastapi import Request

from service.dataplane import DataPlane
from service.draining import Drain
from service.errors import RequestError
from service.repository import ServedModel

__all__ = ["dataplane_of", "native_model", "ready_model"]


def dataplane_of(request: Request) -> DataPlane:
    """The data plane the app was built with."""
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def native_model(request: Request) -> ServedModel:
    """The model the native endpoints serve, or 503 while there is none."""
    return dataplane_of(request).native_model()


def ready_model(request: Request) -> ServedModel:
    """:func:`native_model` for the readiness probes, which also say 503 while draining."""
    drain: Drain = request.app.state.drain
    if drain.draining:
        raise RequestError(503, "Shutting down: draining; send new requests elsewhere")
    return native_model(request)
