"""Process set-up done on ``import service``: BLAS threads and the allocator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Allocates and frees a 10 000 x 128 float32 array (a hidden layer of a 10 000-row batch) 20
# times after one warm-up round, and reports the minor page faults those 20 rounds caused.
_PROBE = """
import json, resource
import service
import numpy as np
x = np.ones((10_000, 64), dtype=np.float32)
w = np.ones((64, 128), dtype=np.float32)
(x @ w).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    (x @ w).sum()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuned": service.ALLOCATOR_TUNED, "faults": after - before}))
"""


def _probe(**env: str) -> dict[str, object]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
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


def test_blas_uses_one_thread_unless_told_otherwise():
    code = "import service, os; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "OPENBLAS_NUM_THREADS": "3"},
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "3"
