"""Admission: slots for requests ready to compute, a memory budget, quick 503s, recovery."""

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY

from service.admission import BYTES_PER_BODY_BYTE, Admission, memory_needed
from service.app import create_app
from service.errors import RequestError
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL

ROW = b"[" + b",".join([b"1"] * 64) + b"]"
ONE = b'{"vectors": [' + ROW + b"]}"
JSON = {"content-type": "application/json"}


def in_flight() -> float:
    return REGISTRY.get_sample_value("digitcode_requests_in_flight") or 0.0


async def wait_in_flight(target: float) -> None:
    """Until the service's own gauge shows ``target`` requests in flight (10 s at most)."""

    async def poll() -> None:
        while in_flight() != target:
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), 10)
    except TimeoutError:
        pytest.fail(f"the gauge never showed {target} requests in flight: {in_flight()}")


@pytest.mark.anyio
async def test_requests_still_sending_their_body_hold_no_slot(default_repository):
    app = create_app(
        Settings(model_dir=DEFAULT_MODEL, max_concurrency=2), repository=default_repository
    )
    release = asyncio.Event()

    async def slow_body():
        yield b'{"vectors": ['
        await release.wait()
        yield ROW + b"]}"

    before = in_flight()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        slow = [
            asyncio.create_task(c.post("/encode", content=slow_body(), headers=JSON))
            for _ in range(3)
        ]
        try:
            await wait_in_flight(before + 3)  # more than the 2 slots, all still sending
            normal = await asyncio.wait_for(c.post("/encode", content=ONE, headers=JSON), 5)
        finally:
            release.set()
            finished = await asyncio.gather(*slow)
    assert normal.status_code == 200, normal.text
    assert [r.status_code for r in finished] == [200, 200, 200]
    assert app.state.admission.in_flight == 0 and app.state.admission.reserved == 0


@pytest.mark.anyio
async def test_all_slots_taken_answers_503_quickly_and_recovers(default_repository):
    app = create_app(
        Settings(model_dir=DEFAULT_MODEL, max_concurrency=2), repository=default_repository
    )
    admission: Admission = app.state.admission
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        admission.take_slot()
        admission.take_slot()  # two requests computing or answering
        refused = await asyncio.wait_for(c.post("/encode", content=ONE, headers=JSON), 1.0)
        refused_oip = await c.get("/v2/models/digitcode")
        probe = await c.get("/readyz")
        admission.give_slot()
        after = await c.post("/encode", content=ONE, headers=JSON)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "Server busy: 2 requests in flight (limit 2)" in refused.json()["detail"]
    assert refused_oip.status_code == 503 and "Server busy" in refused_oip.json()["error"]
    assert probe.status_code == 200
    assert after.status_code == 200


@pytest.mark.anyio
async def test_memory_budget_refuses_before_reading_the_body(default_repository):
    # Room for two requests of 1 000 declared bytes, not three.
    budget = 2 * memory_needed(1000) + 100
    app = create_app(
        Settings(model_dir=DEFAULT_MODEL, memory_budget_bytes=budget), repository=default_repository
    )
    release = asyncio.Event()
    padded = ONE + b" " * (1000 - len(ONE))

    async def slow_body():
        yield padded[:10]
        await release.wait()
        yield padded[10:]

    sized = {**JSON, "content-length": "1000"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        held = [
            asyncio.create_task(c.post("/encode", content=slow_body(), headers=sized))
            for _ in range(2)
        ]
        try:
            await wait_in_flight(in_flight() + 2)
            refused = await asyncio.wait_for(c.post("/encode", content=padded, headers=JSON), 1)
            too_big = await c.post("/encode", content=b" " * budget, headers=JSON)
        finally:
            release.set()
            finished = await asyncio.gather(*held)
        after = await c.post("/encode", content=padded, headers=JSON)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "memory budget" in refused.json()["detail"]
    # A request that could never fit is not told to retry.
    assert too_big.status_code == 413 and "smaller batches" in too_big.json()["detail"]
    assert [r.status_code for r in finished] == [200, 200]
    assert after.status_code == 200
    assert app.state.admission.reserved == 0


@pytest.mark.anyio
async def test_a_body_without_length_is_charged_as_it_arrives(default_repository):
    budget = memory_needed(0) + 500 * BYTES_PER_BODY_BYTE
    app = create_app(
        Settings(model_dir=DEFAULT_MODEL, memory_budget_bytes=budget), repository=default_repository
    )

    async def chunked(body: bytes):
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        fits = await c.post("/encode", content=chunked(ONE), headers=JSON)  # 150 bytes
        large = ONE[:-2] + b"," + b",".join([ROW] * 3) + b"]}"  # 600 bytes
        refused = await c.post("/encode", content=chunked(large), headers=JSON)
    assert fits.status_code == 200
    assert refused.status_code == 413
    assert app.state.admission.reserved == 0


@pytest.mark.anyio
async def test_freed_memory_is_released_after_a_burst_of_large_requests():
    released = []
    admission = Admission(4, 1 << 30, release=lambda: released.append(True))
    big = 4 << 20  # body bytes: 24 MiB reserved each
    first = admission.reserve(big)
    second = admission.reserve(big)
    admission.release(first)
    await asyncio.sleep(0.7)
    assert released == []  # one still in flight
    admission.release(second)
    third = admission.reserve(10)
    await asyncio.sleep(0.7)
    assert released == []  # due, but a request was in flight: the next to finish reschedules
    admission.release(third)
    await asyncio.sleep(0.7)
    assert released == [True]
    for _ in range(1000):  # 64 MiB in all, but in small requests: they reuse the heap
        admission.release(admission.reserve(1000))
    await asyncio.sleep(0.7)
    assert released == [True]


@pytest.mark.anyio
async def test_one_large_request_is_enough_to_release_once_idle():
    # A burst of a few large requests must not leave its heap behind (the soak saw +10 %).
    released = []
    admission = Admission(4, 1 << 30, release=lambda: released.append(True))
    admission.release(admission.reserve(200_000))  # 1.2 MiB reserved
    await asyncio.sleep(0.7)
    assert released == [True]
    held = admission.reserve(0)  # a body without a length, charged as it arrives
    admission.release(held + admission.grow(200_000, held))
    await asyncio.sleep(0.7)
    assert released == [True, True]


def test_slots_refuse_beyond_the_limit():
    admission = Admission(1, 1 << 20)
    admission.take_slot()
    with pytest.raises(RequestError) as refused:
        admission.take_slot()
    assert refused.value.status_code == 503
    admission.give_slot()
    admission.take_slot()
    assert admission.in_flight == 1
