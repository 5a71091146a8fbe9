"""Memory is admitted: 64 concurrent maximum-size requests against one worker stay in budget.

Against ``python -m service`` with its default settings (one worker, the default 160 MiB budget
when no container limit is set): every answer is 200, or 503 with ``Retry-After``; the worker's
peak RSS stays under the documented 256 MiB per worker; and it returns to within 20 % of its
idle RSS 10 s after the load.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter

import httpx
import numpy as np
import orjson
import pytest

from service.settings import DEFAULT_MEMORY_BUDGET, WORKER_BASE_MEMORY
from tests.conftest import DATA, rss_mib, running_service

pytestmark = pytest.mark.slow

MAX_ROWS = 10_000
CLIENTS = 64
PER_WORKER_LIMIT_MIB = (WORKER_BASE_MEMORY + DEFAULT_MEMORY_BUDGET) >> 20  # 256


def max_size_bodies() -> dict[str, bytes]:
    """10 000 digits as full-precision floats (the largest request), as JSON and as ``.npy``."""
    X = np.loadtxt(DATA / "optdigits.tra", delimiter=",")[:, :64]
    X = np.resize(X, (MAX_ROWS, 64)) + np.random.default_rng(0).random((MAX_ROWS, 64))
    X = np.clip(X, 0, 16)
    buffer = io.BytesIO()
    np.save(buffer, X)
    return {
        "application/json": orjson.dumps({"vectors": X}, option=orjson.OPT_SERIALIZE_NUMPY),
        "application/x-npy": buffer.getvalue(),
    }


async def burst(url: str, body: bytes, content_type: str) -> Counter[tuple[int, str | None]]:
    headers = {"content-type": content_type, "accept": content_type}
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        answers = await asyncio.gather(
            *[client.post("/reconstruct", content=body, headers=headers) for _ in range(CLIENTS)]
        )
    return Counter((a.status_code, a.headers.get("retry-after")) for a in answers)


def test_64_concurrent_maximum_requests_stay_in_budget_and_memory_comes_back():
    assert PER_WORKER_LIMIT_MIB == 256
    bodies = max_size_bodies()
    with running_service({"DIGITCODE_WORKERS": "1", "DIGITCODE_LOG_LEVEL": "warning"}) as (
        server,
        url,
    ):
        for _ in range(20):  # warm: the first requests' allocations are part of idle
            httpx.post(f"{url}/encode", json={"vectors": [[1.0] * 64] * 5}).raise_for_status()
        idle = rss_mib(server.pid)
        answers = {kind: asyncio.run(burst(url, body, kind)) for kind, body in bodies.items()}
        peak = rss_mib(server.pid, "VmHWM")
        deadline = time.monotonic() + 10
        while (after := rss_mib(server.pid)) > 1.2 * idle and time.monotonic() < deadline:
            time.sleep(0.2)
    for kind, counts in answers.items():
        assert set(counts) <= {(200, None), (503, "1")}, (kind, counts)
        assert counts[(200, None)] >= 1, (kind, counts)
    assert peak < PER_WORKER_LIMIT_MIB, f"peak RSS {peak:.0f} MiB"
    assert after <= 1.2 * idle, f"RSS {after:.0f} MiB 10 s after the load, idle {idle:.0f} MiB"
