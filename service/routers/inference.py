"""``/encode``, ``/decode`` and ``/reconstruct``: batches of arrays in, batches of arrays out."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from service.dependencies import get_model, read_matrix, respond
from service.parsing import CODES, JSON_TYPE, NPY_TYPE, VECTORS
from service.schemas import (
    DecodeRequest,
    DecodeResponse,
    EncodeRequest,
    EncodeResponse,
    ErrorResponse,
    ReconstructRequest,
    ReconstructResponse,
)

__all__ = ["router"]

router = APIRouter(tags=["inference"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _responses(npy_shape: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "content": {NPY_TYPE: _BINARY},
            "description": f"JSON, or with `Accept: {NPY_TYPE}` a `.npy` array of shape "
            f"{npy_shape} in the request's float type.",
        },
        413: {"model": ErrorResponse, "description": "Body or batch larger than the limits."},
        415: {"model": ErrorResponse, "description": "Content-Type is neither JSON nor .npy."},
        422: {"model": ErrorResponse, "description": "Body is not valid; `loc` says where."},
        503: {"model": ErrorResponse, "description": "Model not loaded yet."},
    }


def _request_body(model: type[BaseModel], npy_shape: str) -> dict[str, Any]:
    # The handlers read the raw body (fast parsing, size limit while streaming), so FastAPI
    # cannot infer the request schema: declare it from the same model the slow path validates.
    example = {
        name: field.examples[0] for name, field in model.model_fields.items() if field.examples
    }
    return {
        "requestBody": {
            "required": True,
            "description": f"JSON as below, or a `.npy` float32/float64 array of shape "
            f"{npy_shape} sent as `{NPY_TYPE}`.",
            "content": {
                JSON_TYPE: {"schema": model.model_json_schema(), "example": example},
                NPY_TYPE: _BINARY,
            },
        }
    }


@router.post(
    "/encode",
    response_model=EncodeResponse,
    responses=_responses("(n, 2)"),
    openapi_extra=_request_body(EncodeRequest, "(n, 64)"),
    summary="Encode pixel vectors to 2-D latent codes",
)
async def encode(request: Request) -> Response:
    model = get_model(request)
    body = await read_matrix(request, VECTORS)
    Z = model.encode(body.array)
    return respond(body, {"latent": Z}, Z)


@router.post(
    "/decode",
    response_model=DecodeResponse,
    responses=_responses("(n, 64)"),
    openapi_extra=_request_body(DecodeRequest, "(n, 2)"),
    summary="Decode 2-D latent codes to pixel vectors",
)
async def decode(request: Request) -> Response:
    model = get_model(request)
    body = await read_matrix(request, CODES)
    X = model.decode(body.array)
    return respond(body, {"vectors": X}, X)


@router.post(
    "/reconstruct",
    response_model=ReconstructResponse,
    responses=_responses("(n, 65): 64 reconstructed pixels, then the error"),
    openapi_extra=_request_body(ReconstructRequest, "(n, 64)"),
    summary="Reconstruct pixel vectors and score each by its reconstruction error",
)
async def reconstruct(request: Request) -> Response:
    model = get_model(request)
    body = await read_matrix(request, VECTORS)
    X_hat, errors = model.reconstruct(body.array)
    return respond(body, {"vectors": X_hat, "errors": errors}, np.column_stack([X_hat, errors]))
