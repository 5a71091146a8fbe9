"""Shared fixtures: sample rows, a tiny trained model, the app built on the committed model."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.neural_network import MLPRegressor

from service.app import create_app
from service.artifact import save_artifact
from service.model import Autoencoder, scale_pixels
from service.repository import Repository, load_repository
from service.settings import Settings
from training.data import fit_minmax
from training.train import mlp_to_artifact

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "default"
DATA = ROOT / "data"  # the committed UCI files


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like rows: per-class prototypes plus integer noise, in 0..16, labels 0..9.

    Returns
    -------
    X : ndarray of shape (n, 64)
    y : ndarray of shape (n,)
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 17, size=(10, 64)).astype(np.float64)
    prototypes[:, [0, 8, 56]] = 0  # pixels constant in training, as in optdigits
    y = np.arange(n) % 10
    noise = rng.integers(-2, 3, size=(n, 64))
    X = np.clip(prototypes[y] + noise, 0, 16)
    X[:, [0, 8, 56]] = 0
    return X, y


def assert_same_in_model_precision(actual: Any, expected: np.ndarray) -> None:
    """``actual`` (float64 from JSON, CSV or a float64 ``.npy``) holds the model's values.

    ``expected`` comes from the in-process model, in its own precision; JSON prints those values
    with the shortest digits that read back as them, so compare after converting back. Equal to
    float32 rounding, not bit for bit: OpenBLAS computes the last rows of a matrix with other
    kernels than the rest on some CPUs (AVX2 Haswell kernels here), so a row's last bits
    depend on how many rows its request had (a client splits batches); measured 1.8e-7 on
    codes of about 0.5, 4.3e-6 on pixels (0..16). A wrong weight or formula differs by 1e-3 or
    more.
    """
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64).astype(expected.dtype), expected, rtol=1e-5, atol=2e-5
    )


def fresh_copy(dest: Path) -> Path:
    """The working tree as a fresh clone would hold it, uncommitted changes included.

    The files git would check out plus new files not ignored; no .venv, stamps or caches. (A
    `git clone` would test the last commit, not the Makefile being changed.)
    """
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, names.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return dest


def write_optdigits(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    rows = np.column_stack([X, y]).astype(int)
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    return path


@pytest.fixture(scope="session")
def sample_rows() -> np.ndarray:
    """Ten distinct digit-like rows of shape (10, 64)."""
    return synthetic_digits(10, seed=1)[0]


@pytest.fixture(scope="session")
def tiny_mlp() -> tuple[MLPRegressor, np.ndarray, np.ndarray, np.ndarray]:
    """A small 64-8-2-8-64 tanh autoencoder fitted on synthetic rows, with its scaler and data."""
    X, _ = synthetic_digits(200)
    lo, scale = fit_minmax(X)
    Xs = scale_pixels(X, lo, scale)
    mlp = MLPRegressor(hidden_layer_sizes=(8, 2, 8), activation="tanh", max_iter=30, random_state=0)
    mlp.fit(Xs, Xs)
    return mlp, lo, scale, X


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_mlp) -> Path:
    mlp, lo, scale, X_fit = tiny_mlp
    out = tmp_path_factory.mktemp("models") / "tiny"
    # Rows it was not fitted on, for the calibration (300 bound the 0.99 quantile).
    X_val, y_val = synthetic_digits(300, seed=2)
    save_artifact(out, mlp_to_artifact(mlp, lo, scale, {"preset": "test"}, X_fit, X_val, y_val))
    return out


@pytest.fixture(scope="session")
def default_model() -> Autoencoder:
    return Autoencoder.from_dir(DEFAULT_MODEL, Settings().outlier_quantile)


@pytest.fixture(scope="session")
def default_repository() -> Repository:
    """The committed default model as a repository (served as ``digitcode``)."""
    return load_repository(DEFAULT_MODEL)[0]


API_KEY = "correct horse battery staple"


@pytest.fixture
def secured(default_repository: Repository) -> Iterator[TestClient]:
    """The app on the default model with ``API_KEY`` required, started."""
    app = create_app(
        Settings(model_dir=DEFAULT_MODEL, api_key=API_KEY), repository=default_repository
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def settings() -> Settings:
    return Settings(model_dir=DEFAULT_MODEL, max_batch=50)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app on the committed default model, started (lifespan run), max batch 50."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def worker_pids(parent: int) -> set[int]:
    """PIDs of the worker processes uvicorn's supervisor spawned under ``parent``."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            pids.add(int(stat.parent.name))
    return pids


@contextmanager
def running_service(
    settings: dict[str, str], **popen: Any
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m service`` in a subprocess with extra ``DIGITCODE_*`` settings, once ready.

    Yields the process and its base URL; stops it (SIGTERM, then SIGKILL) on the way out
    unless the test already did.
    """
    port = free_port()
    # No drain on SIGTERM unless a test asks for one (tests/service/test_drain.py): each stop
    # would wait out the default 5 s.
    env = {**os.environ, "DIGITCODE_PORT": str(port), "DIGITCODE_DRAIN_SECONDS": "0", **settings}
    server = subprocess.Popen(
        [sys.executable, "-m", "service"], cwd=ROOT, env=env, text=True, **popen
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("the service never became ready")
        yield server, url
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


@dataclass
class Outcome:
    """One request of :func:`client_loop`."""

    started: float  # time.monotonic() when the request was sent
    status: int | None  # None: a transport error
    connection: str  # the answer's Connection header
    version: str  # the answer's X-Model-Version header


def client_loop(url: str, outcomes: list[Outcome], stop: threading.Event, body: Any) -> None:
    """One keep-alive client: ``POST /encode`` with ``body`` until ``stop``, outcomes recorded.

    The body is encoded once: encoding it per request holds the GIL for tens of ms in each
    client thread, which starves the test's own thread (its signal and probes come late).
    """
    payload = json.dumps(body).encode()
    with httpx.Client(
        base_url=url, timeout=30, headers={"content-type": "application/json"}
    ) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = client.post("/encode", content=payload)
            except httpx.TransportError:
                outcomes.append(Outcome(started, None, "", ""))
                time.sleep(0.05)  # e.g. the listener has closed: no busy loop until the end
                continue
            headers = answer.headers
            outcomes.append(
                Outcome(
                    started,
                    answer.status_code,
                    headers.get("connection", ""),
                    headers.get("x-model-version", ""),
                )
            )
