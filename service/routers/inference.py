"""``/encode``, ``/decode`` and ``/reconstruct``: batches of arrays in, batches of arrays out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from service.dependencies import get_model, settings_of
from service.exchange import OPERATIONS, answer, check_content_type, read_limited
from service.parsing import JSON_TYPE, NPY_TYPE
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


async def _serve(request: Request, path: str) -> Response:
    model = get_model(request)
    media_type = check_content_type(request.headers.get("content-type", ""))
    settings = settings_of(request)
    body = await read_limited(
        request.stream(), request.headers.get("content-length"), settings.body_limit
    )
    payload, answer_type, rows = answer(
        OPERATIONS[path],
        model,
        media_type,
        request.headers.get("accept", ""),
        body,
        settings.max_batch,
    )
    request.state.vectors = rows  # for the metrics and the access log
    return Response(content=payload, media_type=answer_type)


@router.post(
    "/encode",
    response_model=EncodeResponse,
    responses=_responses("(n, 2)"),
    openapi_extra=_request_body(EncodeRequest, "(n, 64)"),
    summary="Encode pixel vectors to 2-D latent codes",
)
async def encode(request: Request) -> Response:
    return await _serve(request, "/encode")


@router.post(
    "/decode",
    response_model=DecodeResponse,
    responses=_responses("(n, 64)"),
    openapi_extra=_request_body(DecodeRequest, "(n, 2)"),
    summary="Decode 2-D latent codes to pixel vectors",
)
async def decode(request: Request) -> Response:
    return await _serve(request, "/decode")


@router.post(
    "/reconstruct",
    response_model=ReconstructResponse,
    responses=_responses("(n, 65): 64 reconstructed pixels, then the error"),
    openapi_extra=_request_body(ReconstructRequest, "(n, 64)"),
    summary="Reconstruct pixel vectors and score each by its reconstruction error",
)
async def reconstruct(request: Request) -> Response:
    return await _serve(request, "/reconstruct")
