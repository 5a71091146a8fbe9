"""Past the concurrency limit the service answers 503 at once, and recovers."""

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY

from service.app import create_app
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL

ROW = b"[" + b",".join([b"1"] * 64) + b"]"


@pytest.mark.anyio
async def test_busy_answers_503_quickly_and_recovers(default_repository):
    app = create_app(
        Settings(model_dir=DEFAULT_MODEL, max_concurrency=2), repository=default_repository
    )
    release = asyncio.Event()

    async def slow_body():
        # The request is accepted and stays in flight until released.
        yield b'{"vectors": ['
        await release.wait()
        yield ROW + b"]}"

    def in_flight() -> float:
        return REGISTRY.get_sample_value("digitcode_requests_in_flight") or 0.0

    async def both_in_flight(before: float) -> None:
        while in_flight() != before + 2:
            await asyncio.sleep(0.01)

    before = in_flight()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        headers = {"content-type": "application/json"}
        slow = [
            asyncio.create_task(c.post("/encode", content=slow_body(), headers=headers))
            for _ in range(2)
        ]
        try:
            # Both must be in flight (the service's own gauge says so) before the third is
            # sent; otherwise the third could be refused, or not, for some other reason.
            try:
                await asyncio.wait_for(both_in_flight(before), 10)
            except TimeoutError:
                pytest.fail(f"the gauge never showed both requests in flight: {in_flight()}")
            refused = await asyncio.wait_for(
                c.post("/encode", content=b'{"vectors": [' + ROW + b"]}", headers=headers), 1.0
            )
            probe = await c.get("/readyz")
        finally:
            release.set()
            finished = await asyncio.gather(*slow)
        after = await c.post("/encode", content=b'{"vectors": [' + ROW + b"]}", headers=headers)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "Server busy: 2 requests in flight (limit 2)" in refused.json()["detail"]
    assert probe.status_code == 200
    assert [r.status_code for r in finished] == [200, 200]
    assert after.status_code == 200
    assert in_flight() == before
