"""``python -m service`` refuses a bad model directory with one clear line."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # python -m service in a subprocess, about 1 s each


def _serve(**settings: str) -> subprocess.CompletedProcess:
    """Run ``python -m service`` with extra ``DIGITCODE_*`` settings until it exits."""
    env = {**os.environ, "DIGITCODE_PORT": "0", **settings}
    return subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_model_dir_exits_with_one_line(tmp_path):
    result = _serve(DIGITCODE_MODEL_DIR=str(tmp_path / "absent"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"digitcode: cannot serve: {tmp_path / 'absent'}: model directory not found"]


def test_corrupted_model_exits_with_one_line(tmp_path, tiny_model_dir):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    (model / "weights.npz").write_bytes(b"garbage")
    result = _serve(DIGITCODE_MODEL_DIR=str(model))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "weights.npz: sha256" in lines[0] and "does not match" in lines[0]


def test_bad_setting_exits_with_one_line():
    result = _serve(DIGITCODE_WORKERS="abc", DIGITCODE_LOG_LEVEL="verbose")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("digitcode: cannot serve: bad setting: ")
    assert "DIGITCODE_WORKERS" in line and "DIGITCODE_LOG_LEVEL" in line


def test_several_workers_get_the_worker_timeout_not_uvicorns_5_s(monkeypatch):
    import uvicorn

    from service.__main__ import main
    from service.observability import MULTIPROC_ENV
    from service.settings import get_settings
    from service.tuning import BLAS_THREAD_VARIABLES

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    monkeypatch.setenv("DIGITCODE_WORKERS", "2")
    monkeypatch.setenv("DIGITCODE_WORKER_TIMEOUT", "17")
    for variable in (MULTIPROC_ENV, *BLAS_THREAD_VARIABLES):  # main() sets them: restored after
        monkeypatch.setenv(variable, os.environ.get(variable, "1"))
    get_settings.cache_clear()
    try:
        assert main() == 0
    finally:
        get_settings.cache_clear()
    assert [(c["workers"], c["timeout_worker_healthcheck"]) for c in calls] == [(2, 17)]
