"""Process tuning (service.tuning): applied by the server when it starts, never on import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from service.tuning import BLAS_THREAD_VARIABLES
from tests.conftest import DEFAULT_MODEL, ROOT

# Each test starts Python subprocesses that import the service and training code: 5-40 s.
pytestmark = pytest.mark.slow

# Allocates and frees a 10 000 x 128 float32 array (a hidden layer of a 10 000-row batch) 20
# times after one warm-up round, and reports the minor page faults those 20 rounds caused.
_PROBE = """
import json, resource, sys
import service.app, service.artifact, training.train  # importing changes nothing
tuned = sys.argv[1] == "tune" and service.tuning.keep_freed_memory()
import numpy as np
x = np.ones((10_000, 64), dtype=np.float32)
w = np.ones((64, 128), dtype=np.float32)
(x @ w).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    (x @ w).sum()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuned": tuned, "faults": after - before}))
"""


def _probe(tune: bool = True, **env: str) -> dict[str, object]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "tune" if tune else "import-only"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_freed_arrays_are_reused_without_page_faults():
    tuned = _probe()
    assert tuned["tuned"] is True
    # 20 rounds of a 5 MB result: untuned, each round faults in hundreds of fresh pages.
    assert isinstance(tuned["faults"], int) and tuned["faults"] < 200


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_glibc_settings_from_the_environment_win():
    untuned = _probe(MALLOC_MMAP_THRESHOLD_="131072")
    assert untuned["tuned"] is False
    # glibc's default behaviour: the probe's arrays are mapped and unmapped every round.
    assert isinstance(untuned["faults"], int) and untuned["faults"] > 20 * 200


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_glibc_tunables_for_malloc_win_too():
    assert _probe(GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")["tuned"] is False
    assert _probe(GLIBC_TUNABLES="glibc.pthread.rseq=0")["tuned"] is True


# Where a fresh 30 MB array lives: glibc maps it on its own ("mmap") unless the tuning raised
# the mmap threshold to 32 MB, which puts it on the heap ("[heap]").
_WHERE = """
import sys
import service.app, service.artifact, training.train  # importing changes nothing
if sys.argv[1] == "tune":
    service.tuning.keep_freed_memory()
import numpy as np
a = np.ones(30 << 17)  # 30 MB of float64
address = a.ctypes.data
for line in open("/proc/self/maps"):
    span, *rest = line.split()
    lo, hi = (int(x, 16) for x in span.split("-"))
    if lo <= address < hi:
        print("[heap]" if rest[-1:] == ["[heap]"] else "mmap")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_importing_the_service_leaves_the_allocator_alone():
    def where(mode: str) -> str:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
        }
        out = subprocess.run(
            [sys.executable, "-c", _WHERE, mode],
            env=clean,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.strip()

    assert where("import-only") == "mmap"
    assert where("tune") == "[heap]"


_BLAS = """
import sys
from service.tuning import limit_blas_threads
if sys.argv[1] == "limit":
    limit_blas_threads()  # as python -m service does, before numpy loads
import service.__main__, service.app, training.train
import numpy as np, threadpoolctl
np.ones((4, 4)) @ np.ones((4, 4))
print(max(pool["num_threads"] for pool in threadpoolctl.threadpool_info()))
"""


def _blas_threads(mode: str, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", _BLAS, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs to tell 1 thread from many")
def test_blas_runs_one_thread_once_limited_and_not_on_import():
    assert _blas_threads("limit") == 1
    assert _blas_threads("limit", OPENBLAS_NUM_THREADS="2") == 2  # an explicit setting wins
    assert _blas_threads("import-only") > 1  # importing the service set nothing


# ``python -m service`` itself, up to the point where it would serve: uvicorn.run is replaced by
# a probe that reports the BLAS threads of the server process, and of a process started the way
# uvicorn starts a worker (it inherits the environment).
_SERVE = """
import json, subprocess, sys
import uvicorn
import service.__main__
imported_numpy = "numpy" in sys.modules
def run(app, **options):
    import threadpoolctl
    def threads():
        return max(pool["num_threads"] for pool in threadpoolctl.threadpool_info())
    worker = subprocess.run(
        [sys.executable, "-c", sys.argv[1]], capture_output=True, text=True, check=True
    )
    print(json.dumps([imported_numpy, threads(), int(worker.stdout)]))
uvicorn.run = run
sys.exit(service.__main__.main())
"""
_WORKER = """
import numpy as np, threadpoolctl
np.ones((4, 4)) @ np.ones((4, 4))
print(max(pool["num_threads"] for pool in threadpoolctl.threadpool_info()))
"""


def _serve_blas_threads(workers: int, **env: str) -> list[object]:
    """[numpy imported with service.__main__?, server threads, worker threads]."""
    clean = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    settings = {"DIGITCODE_MODEL_DIR": str(DEFAULT_MODEL), "DIGITCODE_WORKERS": str(workers)}
    out = subprocess.run(
        [sys.executable, "-c", _SERVE, _WORKER],
        env={**clean, **settings, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: list[object] = json.loads(out.stdout)
    return result


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs to tell 1 thread from many")
@pytest.mark.parametrize("workers", [1, 2])
def test_the_server_runs_blas_in_one_thread(workers):
    # Not that a variable is set: the BLAS library of the process that serves (and of the
    # workers it starts) runs one thread, so limiting after numpy loaded would fail here.
    assert _serve_blas_threads(workers) == [False, 1, 1]
    # an explicit setting wins, and the probe does see more than one thread
    assert _serve_blas_threads(workers, OPENBLAS_NUM_THREADS="2") == [False, 2, 2]
