"""``/metrics``: Prometheus text exposition, all workers added up."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.observability import METRICS_CONTENT_TYPE, metrics_payload

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def metrics() -> Response:
    return Response(metrics_payload(), media_type=METRICS_CONTENT_TYPE)
