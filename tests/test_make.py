"""`make serve` and `make test` from a fresh clone: what each installs, and both at once.

The real installs run (pip, from PyPI or the local cache) in copies of the working tree, through
the targets that `serve` and `test` depend on (`install-runtime`, `install-dev`), so the server
and the test suite themselves are not started. About two minutes: marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker

from tests.conftest import fresh_copy

VENV = ".venv"
MAX_SERVE_VENV_MB = 250
# Development-only packages (import names) that must not be in the venv `make serve` creates.
DEV_ONLY = ("sklearn", "matplotlib", "mypy", "pytest", "schemathesis", "ruff")
# What `python -m venv` puts in every venv, besides the locked packages.
VENV_BASE = {"pip", "setuptools", "wheel"}
# The step that installs the client distribution (editable) in the development venv.
CLIENT_STEP = "--no-deps -e ."
TIMEOUT = 600  # s, per make process; a cold install takes about a minute

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
]


@dataclass
class Run:
    target: str
    returncode: int
    output: str


def make_env() -> dict[str, str]:
    """This environment without what an enclosing make or venv passes down."""
    env = dict(os.environ)
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def start(repo: Path, target: str) -> tuple[str, subprocess.Popen[str]]:
    process = subprocess.Popen(
        ["make", "--no-print-directory", target],
        cwd=repo,
        env=make_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return target, process


def finish(target: str, process: subprocess.Popen[str]) -> Run:
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        output += f"\n(killed after {TIMEOUT} s)"
    return Run(target, process.returncode, output)


def dry_run(repo: Path, target: str) -> str:
    """What ``make -n target`` would run in ``repo``."""
    return subprocess.run(
        ["make", "-n", "--no-print-directory", target],
        cwd=repo,
        env=make_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def venv_python(repo: Path, code: str, *args: str) -> str:
    return subprocess.run(
        [str(repo / VENV / "bin" / "python"), "-c", code, *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def importable(repo: Path, names: tuple[str, ...]) -> dict[str, bool]:
    code = (
        "import importlib.util, json, sys; "
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]}))"
    )
    return dict(json.loads(venv_python(repo, code, *names)))


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions(repo: Path) -> set[str]:
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    )
    return {normalize(name) for name in json.loads(venv_python(repo, code))}


def locked_names(lock: Path) -> set[str]:
    """The packages a lock installs on this platform (its environment markers evaluated)."""
    names = set()
    for name, marker in re.findall(
        r"^([A-Za-z0-9][A-Za-z0-9._-]*)==[^ ;]+(?: ; ([^\\\n]+?))? *\\?$", lock.read_text(), re.M
    ):
        if not marker or Marker(marker).evaluate():
            names.add(normalize(name))
    return names


def venv_megabytes(repo: Path) -> int:
    # What `du -sm .venv` reports: disk usage, rounded up.
    output = subprocess.run(
        ["du", "-sk", str(repo / VENV)], check=True, capture_output=True, text=True
    ).stdout
    return -(-int(output.split()[0]) // 1024)


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, Run]]]:
    """Three fresh copies' worth of make, all started together.

    "both": `make install-runtime` and `make install-dev` started at the same moment in one
    fresh copy, as `make serve` and `make test` would be. "serve": `make install-runtime`
    alone in another, to see what a serve-only venv holds.
    """
    both = fresh_copy(tmp_path_factory.mktemp("both"))
    serve = fresh_copy(tmp_path_factory.mktemp("serve"))
    started = {
        "both/runtime": (both, start(both, "install-runtime")),
        "both/dev": (both, start(both, "install-dev")),
        "serve": (serve, start(serve, "install-runtime")),
    }
    yield {key: (repo, finish(*process)) for key, (repo, process) in started.items()}
    for repo in (both, serve):  # about 1 GB of venvs
        shutil.rmtree(repo, ignore_errors=True)


def test_serve_and_test_installs_started_together_both_succeed(installs):
    repo = installs["both/runtime"][0]
    for key in ("both/runtime", "both/dev"):
        run = installs[key][1]
        assert run.returncode == 0, f"make {run.target} failed:\n{run.output}"
    # One after the other: each step ran once, in whichever make got to it first; the other
    # found it done. (Two makes that only check stamps both start every step.)
    output = installs["both/runtime"][1].output + installs["both/dev"][1].output
    for step in ("-m venv", "-r requirements.lock", "-r requirements-dev.lock", CLIENT_STEP):
        assert output.count(step) == 1, f"{step!r} not run exactly once:\n{output}"
    # Whichever took the lock first, the venv now holds both locks and the client.
    assert (repo / VENV / ".installed-runtime").is_file()
    assert (repo / VENV / ".installed-dev").is_file()
    names = ("service", "digitcode", "fastapi", "sklearn", "matplotlib", "mypy")
    assert all(importable(repo, names).values())
    project = normalize(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["name"])
    assert installed_distributions(repo) >= locked_names(repo / "requirements-dev.lock") | {project}
    # Nothing left to do for either command.
    for target in ("install-runtime", "install-dev"):
        dry = dry_run(repo, target)
        assert "pip install" not in dry, dry


def test_serve_installs_the_runtime_lock_only_in_under_250_mb(installs):
    repo, run = installs["serve"]
    assert run.returncode == 0, f"make {run.target} failed:\n{run.output}"
    present = importable(repo, ("service", "fastapi", "uvicorn", *DEV_ONLY))
    assert present["service"] and present["fastapi"] and present["uvicorn"]
    assert not [name for name in DEV_ONLY if present[name]]
    # Not even the client distribution: the server runs from the repository.
    extra = installed_distributions(repo) - locked_names(repo / "requirements.lock")
    assert extra <= VENV_BASE, extra
    size = venv_megabytes(repo)
    assert size < MAX_SERVE_VENV_MB, f"{size} MB"
    # The stamps say what is installed: the runtime lock, not the development one ...
    assert (repo / VENV / ".installed-runtime").is_file()
    assert not (repo / VENV / ".installed-dev").exists()
    # ... so the `make test` that comes next adds the development lock and the client, only.
    dry = dry_run(repo, "install-dev")
    installs_run = [line for line in dry.splitlines() if "pip install" in line]
    assert len(installs_run) == 2, dry
    assert "-r requirements-dev.lock" in installs_run[0] and CLIENT_STEP in installs_run[1], dry
