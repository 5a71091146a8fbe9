"""The cost curves, the README's generated block and the placements (no wrk: in-process)."""

import io
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from benchmarks.answers import AnswerMismatchError, Answers
from benchmarks.curves import (
    CONNECTIONS,
    ROWS,
    CurvePoint,
    check_curve_answers,
    plot_curves,
    write_row_bodies,
)
from benchmarks.report import (
    README_END,
    README_START,
    evaluate_targets,
    median_runs,
    readme_block,
    report_dict,
    update_readme,
)
from benchmarks.run import load_rows, reference_answers, workloads
from benchmarks.servers import unpin
from benchmarks.wrk import parse_wrk_output
from service.app import create_app
from service.settings import Settings
from tests.benchmarks.test_bench import _run
from tests.conftest import DEFAULT_MODEL

_WRK = (
    'WRK_RESULT {"requests": %d, "duration_us": 3000000, "bytes": 1, "non2xx": 0,'
    ' "first_bad_status": 0,'
    ' "errors_connect": 0, "errors_read": 0, "errors_write": 0, "errors_status": 0,'
    ' "errors_timeout": 0, "latency_mean_us": 900.0, "latency_p50_us": 800,'
    ' "latency_p99_us": %d, "latency_max_us": 9000}'
)


def _result(requests: int, p99_us: int = 2000):
    return parse_wrk_output(_WRK % (requests, p99_us))


@pytest.fixture(scope="module")
def service():
    with TestClient(create_app(Settings(model_dir=DEFAULT_MODEL, max_batch=10_000))) as client:
        yield client


def test_row_bodies_hold_the_first_n_rows_in_each_format(tmp_path):
    rows = load_rows(10_000)
    scripts = write_row_bodies(tmp_path, rows)
    assert set(scripts) == {
        (path, fmt, n)
        for path in ("/encode", "/reconstruct")
        for fmt in ("JSON", ".npy")
        for n in ROWS
    }
    script, body = scripts[("/reconstruct", ".npy", 100)]
    sent = np.load(io.BytesIO(body))
    assert sent.dtype == np.float32 and sent.shape == (100, 64)
    np.testing.assert_array_equal(sent, rows[:100].astype(np.float32))
    assert 'wrk.headers["Content-Type"] = "application/x-npy"' in script.read_text()
    _, json_body = scripts[("/encode", "JSON", 10)]
    assert np.array_equal(np.array(json.loads(json_body)["vectors"]), rows[:10])


def test_curve_answers_are_checked_against_the_model(service, default_model):
    rows = load_rows(10_000)
    check_curve_answers(service, rows, lambda X: reference_answers(default_model, X))

    def wrong(X):
        right = reference_answers(default_model, X)
        return Answers(latent=right.latent + 1e-3, vectors=right.vectors, errors=right.errors)

    with pytest.raises(AnswerMismatchError, match="JSON 1"):
        check_curve_answers(service, rows, wrong)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_pictures_are_drawn_from_the_saved_points(tmp_path):
    points = [
        CurvePoint("rows", "digitcode", path, fmt, n, 4, _result(300 * n // max(1, n // 10)))
        for path in ("/encode", "/reconstruct")
        for fmt in ("JSON", ".npy")
        for n in ROWS
    ]
    points += [
        CurvePoint("connections", server, "/encode", "JSON", 1, c, _result(9000 + c))
        for server in ("noop", "digitcode")
        for c in CONNECTIONS
    ]
    saved = json.loads(json.dumps([p.as_dict() for p in points]))
    assert saved[0]["vectors_per_s"] == pytest.approx(100.0)  # 300 requests of 1 row in 3 s
    written = plot_curves(saved, tmp_path, "test run")
    assert [p.name for p in written] == ["rows.png", "connections.png"]
    assert all(_png_size(p) == (1210, 462) for p in written)


def _report():
    runs = median_runs(
        [_run("noop", "encode-1", 1, 10_000), _run("digitcode", "encode-1", 1, 10_500)]
    )
    meta = {
        "git": "abc1234",
        "date": "2026-11-30",
        "cpus": 2,
        "cpu": "Some CPU",
        "rounds": 3,
        "duration_s": 6.0,
        "server_cpus": "0",
        "wrk_cpus": "1",
    }
    return json.loads(json.dumps(report_dict(meta, runs, {}, evaluate_targets(runs, {}), [])))


def test_readme_block_is_rewritten_from_the_report(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{README_START}\nold table\n{README_END}\n\nafter\n")
    update_readme(readme, _report())
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "Run of 2026-11-30, commit abc1234, 2 CPUs (Some CPU); 3 rounds of 6 s" in text
    assert "| single-vector /encode req/s vs no-op app, pinned | 1.05x | ≥ 1x | met |" in text
    assert text.count(README_START) == 1 and readme_block(_report()) in text


def test_readme_without_the_block_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    with pytest.raises(ValueError, match="bench:start"):
        update_readme(readme, _report())


def test_the_one_vector_workload_also_runs_with_shared_cpus():
    by_key = {w.key: w for w in workloads(1000, 10_000, 8)}
    shared = by_key["encode-1-shared"]
    assert shared.shared and not by_key["encode-1"].shared
    assert set(shared.servers) == {"noop", "digitcode", "digitcode-nolog"}
    assert (shared.body, shared.connections) == (by_key["encode-1"].body, 8)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs to pin and unpin")
def test_unpin_frees_every_thread_of_a_pinned_process():
    code = (
        "import threading, time; "
        "threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)"
    )
    process = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", code])
    try:
        tasks = f"/proc/{process.pid}/task"
        deadline = time.monotonic() + 10
        while len(os.listdir(tasks)) < 2:
            assert time.monotonic() < deadline, "the thread never started"
            time.sleep(0.01)
        assert all(os.sched_getaffinity(int(t)) == {0} for t in os.listdir(tasks))
        unpin(process.pid)
        everywhere = set(range(os.cpu_count() or 1))
        assert all(os.sched_getaffinity(int(t)) == everywhere for t in os.listdir(tasks))
    finally:
        process.kill()
        process.wait()
