"""The data plane's batching: requests that arrive in the same turn share one forward pass,
and get the same answers, to the last bit, as computed alone."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import numpy as np
import pytest
import uvicorn
from uvicorn.server import ServerState

from service.app import create_app
from service.arrivals import ARRIVALS
from service.connections import GuardedHttpProtocol
from service.dataplane import BATCH_REQUESTS, BATCH_ROWS, DataPlane
from service.errors import RequestError
from service.model import Autoencoder
from service.operations import NATIVE
from service.repository import load_repository
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL

ENCODE = NATIVE["/encode"].signature
RECONSTRUCT = NATIVE["/reconstruct"]


@pytest.fixture
def dataplane(default_repository):
    plane = DataPlane(DEFAULT_MODEL, "digitcode", 10_000)
    plane.load(default_repository)
    plane.batching = True
    return plane


@pytest.fixture
def calls(monkeypatch) -> list[tuple[int, ...]]:
    """The shape of every forward pass the autoencoder computes, without the vectors' width:
    ``(n,)`` for one request of n rows, ``(b, n)`` for b stacked requests of n rows."""
    seen: list[tuple[int, ...]] = []
    encode, forward = Autoencoder.encode, Autoencoder.forward

    def counted_encode(self, X):
        seen.append(X.shape[:-1])
        return encode(self, X)

    def counted_forward(self, X, *args, **kwargs):
        seen.append(X.shape[:-1])
        return forward(self, X, *args, **kwargs)

    monkeypatch.setattr(Autoencoder, "encode", counted_encode)
    monkeypatch.setattr(Autoencoder, "forward", counted_forward)
    return seen


@pytest.fixture(autouse=True)
def no_arrivals():
    ARRIVALS.queued = 0
    yield
    ARRIVALS.queued = 0


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 17, size=(n, 64)).astype(np.float64)


async def _arrive(dataplane: DataPlane, X: np.ndarray, signature=ENCODE, wanted=None) -> Any:
    """One request's task: it enters the app, then asks the data plane (as the app does)."""
    ARRIVALS.entered()
    return await dataplane.infer(
        dataplane.native_model(), signature, X, wanted or frozenset({"latent"}), ["body"]
    )


def _same_turn(dataplane: DataPlane, *coroutines) -> list[Any]:
    async def run():
        ARRIVALS.queued = len(coroutines)  # as the protocol counts them when it starts them
        return await asyncio.gather(*coroutines, return_exceptions=True)

    return asyncio.run(run())


def test_batching_is_on_by_default(default_repository, calls):
    plane = DataPlane(DEFAULT_MODEL, "digitcode", 10_000)
    plane.load(default_repository)
    _same_turn(plane, *(_arrive(plane, _rows(1, s)) for s in range(3)))
    assert calls == [(3, 1)]


def test_a_request_alone_is_computed_at_once(dataplane, calls, default_model):
    X = _rows(3, 0)
    [inference] = _same_turn(dataplane, _arrive(dataplane, X))
    assert calls == [(3,)]
    np.testing.assert_array_equal(inference.outputs["latent"], default_model.encode(X))


def test_requests_of_the_same_turn_and_size_share_one_forward_pass(dataplane, calls):
    rows = [_rows(n, seed) for seed, n in enumerate((1, 3, 1, 3, 1))]
    results = _same_turn(dataplane, *(_arrive(dataplane, X) for X in rows))
    assert calls == [(3, 1), (2, 3)]
    for X, inference in zip(rows, results, strict=True):
        assert inference.rows == len(X)
        latent = inference.outputs["latent"]
        assert latent.shape == (len(X), 2) and latent.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 2, 7, BATCH_ROWS])
@pytest.mark.parametrize(
    "operation", [RECONSTRUCT, NATIVE["/encode"], NATIVE["/decode"]], ids=lambda op: op.path
)
def test_a_batched_answer_is_the_answer_alone_to_the_last_bit(dataplane, operation, n, dtype):
    signature = operation.signature
    wanted = signature.output_names  # every output, feature scores and distances too
    spec = signature.input
    rng = np.random.default_rng(n)
    requests = [rng.uniform(spec.lo, spec.hi, size=(n, spec.width)).astype(dtype) for _ in range(5)]
    batched = _same_turn(dataplane, *(_arrive(dataplane, X, signature, wanted) for X in requests))
    dataplane.batching = False
    for X, inference in zip(requests, batched, strict=True):
        [alone] = _same_turn(dataplane, _arrive(dataplane, X, signature, wanted))
        assert inference.queued > 0 and alone.queued == 0  # one was batched, one was not
        assert set(inference.outputs) == wanted
        for name, value in alone.outputs.items():
            assert inference.outputs[name].dtype == value.dtype
            np.testing.assert_array_equal(inference.outputs[name], value, err_msg=name)


def test_a_full_batch_is_computed_without_waiting_for_the_rest(dataplane, calls):
    count = BATCH_REQUESTS + 3
    results = _same_turn(dataplane, *(_arrive(dataplane, _rows(1, s)) for s in range(count)))
    assert calls == [(BATCH_REQUESTS, 1), (3, 1)]
    assert [r.rows for r in results] == [1] * count


def test_an_invalid_request_fails_alone(dataplane, calls):
    bad = _rows(2, 1)
    bad[1, 7] = 99.0
    good = [_rows(1, 2), _rows(1, 3)]
    results = _same_turn(
        dataplane, _arrive(dataplane, good[0]), _arrive(dataplane, bad), _arrive(dataplane, good[1])
    )
    assert isinstance(results[1], RequestError)
    error: Any = results[1]
    assert error.status_code == 422 and error.detail[0]["loc"] == ["body", 1, 7]
    assert [r.rows for r in (results[0], results[2])] == [1, 1]
    assert calls == [(2, 1)]


def test_every_invalid_request_of_a_turn_gets_its_own_error(dataplane, calls):
    first, second = _rows(1, 8), _rows(3, 9)
    first[0, 0] = np.nan
    second[2, 63] = -1.0
    results = _same_turn(dataplane, _arrive(dataplane, first), _arrive(dataplane, second))
    locs = [cast(Any, r).detail[0]["loc"] for r in results]
    assert locs == [["body", 0, 0], ["body", 2, 63]]
    assert calls == []


def test_different_outputs_and_float_types_are_not_mixed(dataplane, calls, default_model):
    X = _rows(2, 4)
    results = _same_turn(
        dataplane,
        _arrive(dataplane, X),
        _arrive(dataplane, X.astype(np.float32)),
        _arrive(dataplane, X, RECONSTRUCT.signature, RECONSTRUCT.wanted),
        _arrive(dataplane, X),
    )
    assert sorted(calls) == [(2,), (2,), (2, 2)]
    assert set(results[2].outputs) == set(RECONSTRUCT.wanted)
    np.testing.assert_allclose(results[1].outputs["latent"], default_model.encode(X), rtol=1e-5)


def test_large_requests_are_never_held(dataplane, calls):
    big, small = _rows(BATCH_ROWS + 1, 5), _rows(1, 6)
    _same_turn(dataplane, _arrive(dataplane, big), _arrive(dataplane, small))
    assert calls == [(BATCH_ROWS + 1,), (1,)]


def test_a_batch_whose_last_request_never_comes_is_computed_next_turn(dataplane, calls):
    async def probe():  # counted as arriving, but never reaches the data plane
        ARRIVALS.entered()

    results = _same_turn(dataplane, _arrive(dataplane, _rows(1, 7)), probe())
    assert results[0].rows == 1 and calls == [(1,)]
    assert ARRIVALS.queued == 0


def test_a_failure_of_the_shared_pass_reaches_every_request(dataplane, monkeypatch):
    def broken(self, X):
        raise FloatingPointError("boom")

    monkeypatch.setattr(Autoencoder, "encode", broken)
    results = _same_turn(dataplane, *(_arrive(dataplane, _rows(1, s)) for s in range(3)))
    assert [type(r) for r in results] == [FloatingPointError] * 3


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if key in ("peername", "sockname") else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...


def test_requests_read_in_one_turn_are_batched_through_the_real_protocol(calls, default_model):
    """Four connections deliver a request each before the loop runs their tasks."""
    settings = Settings(model_dir=DEFAULT_MODEL, log_level="warning")
    app = create_app(settings, repository=load_repository(DEFAULT_MODEL)[0])
    app.state.dataplane.batching = True
    rows = [_rows(1, seed) for seed in range(4)]

    async def run() -> list[bytes]:
        config = uvicorn.Config(app, lifespan="off")
        config.load()
        state = ServerState()
        pairs = []
        for X in rows:
            protocol = GuardedHttpProtocol(
                config=config, server_state=state, app_state={}, limits=settings.connection_limits()
            )
            transport = _Transport()
            protocol.connection_made(cast(Any, transport))
            pairs.append((protocol, transport, json.dumps({"vectors": X.tolist()}).encode()))
        for protocol, _, body in pairs:  # one turn: every request parsed, no task run yet
            protocol.data_received(
                b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        for _ in range(1000):
            if all(p.cycle and p.cycle.response_complete for p, _, _ in pairs):
                break
            await asyncio.sleep(0)
        return [b"".join(t.out) for _, t, _ in pairs]

    answers = asyncio.run(run())
    assert calls == [(4, 1)]
    assert ARRIVALS.queued == 0
    for X, answer in zip(rows, answers, strict=True):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        latent = np.array(json.loads(body)["latent"], dtype=np.float32)
        np.testing.assert_array_equal(latent, default_model.encode(X))


def test_a_failure_outside_the_forward_pass_reaches_every_request(dataplane, monkeypatch):
    import service.dataplane as module

    def broken(kind):
        raise MemoryError("no room to stack the batch")

    monkeypatch.setattr(module, "_checked", broken)
    results = _same_turn(dataplane, *(_arrive(dataplane, _rows(1, s)) for s in range(3)))
    assert [type(r) for r in results] == [MemoryError] * 3


def test_batched_requests_say_when_they_waited_and_went_on(dataplane):
    results = _same_turn(dataplane, *(_arrive(dataplane, _rows(1, s)) for s in range(3)))
    for r in results:
        assert 0 < r.queued <= r.started <= r.finished <= r.resumed
    alone = _same_turn(dataplane, _arrive(dataplane, _rows(1, 9)))[0]
    assert (alone.queued, alone.resumed) == (0.0, 0.0)
