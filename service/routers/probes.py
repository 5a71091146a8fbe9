"""Probes and metadata: ``/healthz``, ``/readyz``, ``/model``, ``/reference``."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from service.dependencies import native_model, ready_model
from service.errors import RequestError
from service.schemas import ErrorResponse, Health, ModelInfo, ReferenceResponse

__all__ = ["router"]

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": ErrorResponse, "description": "Model not loaded yet, or draining."}},
    summary="Readiness: the model is loaded and the server is not shutting down",
)
async def readyz(request: Request) -> Health:
    ready_model(request)
    return Health(status="ready")


@router.get(
    "/model",
    response_model=ModelInfo,
    responses={503: {"model": ErrorResponse, "description": "Model not loaded yet."}},
    summary="The served model's manifest (the newest version of the default model)",
)
async def model_info(request: Request) -> ModelInfo:
    return ModelInfo.model_validate(native_model(request).model.manifest)


@router.get(
    "/reference",
    response_model=ReferenceResponse,
    responses={503: {"model": ErrorResponse, "description": "Model not loaded yet."}},
    summary="A labelled sample of digits the served model was validated on (not fitted on)",
)
async def reference(request: Request) -> Response:
    sample = native_model(request).model.artifact.reference
    if sample is None:  # not for an artifact the service loaded (they all have one)
        raise RequestError(404, "The served model has no reference sample")
    # Whole numbers, checked at load: written as they are, without 37 000 pydantic checks.
    body = orjson.dumps(
        {"vectors": sample.vectors, "labels": sample.labels}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    return Response(body, media_type="application/json")
