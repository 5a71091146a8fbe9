"""The ``digitcode`` distribution as a user installs it: into a new virtualenv, from the repository.

A user's script environment gets the client and the ``digitcode`` command, httpx, numpy and tqdm,
and nothing of the server: no FastAPI, uvicorn or scikit-learn, and no top-level ``client``,
``service`` or ``training`` package. The real install runs (pip, from the package index or its
cache) from a copy of the working tree, so the repository gets no build junk. About 30 s: slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    DATA,
    assert_same_in_model_precision,
    fresh_copy,
    running_service,
    write_optdigits,
)

pytestmark = pytest.mark.slow

TIMEOUT = 600  # s, per pip command
# What a user's environment must not get from installing the client.
SERVER_DISTRIBUTIONS = ("fastapi", "starlette", "uvicorn", "scikit-learn", "matplotlib")
GENERIC_PACKAGES = ("client", "service", "training")


@dataclass
class Installed:
    bin: Path  # the new venv's bin directory
    outside: Path  # a working directory outside the repository, as a user's script has


def user_environment() -> dict[str, str]:
    """This environment without what points Python at the test venv or the repository."""
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def run(argv: list[str | Path], cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=user_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def name(requirement: str) -> str:
    """The normalised project name of a requirement or distribution."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_copy(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Iterator[Installed]:
    """A new virtualenv with ``pip install <repository>`` done in it."""
    base = tmp_path_factory.mktemp("user")
    venv = base / "venv"
    outside = base / "scripts"
    outside.mkdir()
    run([sys.executable, "-m", "venv", venv], cwd=base)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", repo], cwd=outside)
    yield Installed(venv / "bin", outside)


def test_installs_digitcode_and_its_command_and_nothing_of_the_server(installed):
    code = (
        "import importlib.metadata as m, importlib.util as u, json, sys\n"
        "import digitcode\n"
        "from digitcode import AsyncClient, Client, ClientError\n"
        "print(json.dumps({\n"
        "  'file': digitcode.__file__,\n"
        "  'prefix': sys.prefix,\n"
        "  'importable': {n: u.find_spec(n) is not None for n in sys.argv[1:]},\n"
        "  'distributions': [d.metadata['Name'] for d in m.distributions()],\n"
        "  'requires': m.requires('digitcode'),\n"
        "  'top_level': sorted({f.parts[0] for f in m.files('digitcode')}),\n"
        "}))\n"
    )
    python = installed.bin / "python"
    found = json.loads(run([python, "-c", code, *GENERIC_PACKAGES], cwd=installed.outside))
    # The installed copy, not the repository's.
    assert Path(found["file"]).is_relative_to(found["prefix"]), found["file"]
    assert found["importable"] == dict.fromkeys(GENERIC_PACKAGES, False)
    distributions = {name(d) for d in found["distributions"]}
    assert "digitcode" in distributions
    assert not distributions & set(SERVER_DISTRIBUTIONS), distributions
    assert {name(r) for r in found["requires"]} == {"httpx", "numpy", "tqdm"}
    # What the distribution put in site-packages: its package, its metadata; its command.
    top_level = set(found["top_level"]) - {"..", "__pycache__"}
    assert top_level == {"digitcode", "digitcode-0.1.0.dist-info"}, top_level
    usage = run([installed.bin / "digitcode", "--help"], cwd=installed.outside)
    assert "digitcode encode|decode|reconstruct" in usage


def test_the_installed_command_talks_to_the_service(installed, default_model):
    X = np.loadtxt(DATA / "optdigits.tes", delimiter=",")[:5]
    rows = write_optdigits(installed.outside / "five.csv", X[:, :64], X[:, 64])
    with running_service({"DIGITCODE_WORKERS": "1"}) as (_, url):
        out = run(
            [installed.bin / "digitcode", "encode", rows, "--url", url], cwd=installed.outside
        )
    codes = np.loadtxt(out.splitlines(), delimiter=",", ndmin=2)
    assert_same_in_model_precision(codes[:, :2], default_model.encode(X[:, :64]))
    np.testing.assert_array_equal(codes[:, 2], X[:, 64])  # the label column passed through


def test_the_wheel_holds_only_the_client(installed, repo, tmp_path):
    pip = [installed.bin / "python", "-m", "pip"]
    run([*pip, "wheel", "--quiet", "--no-deps", "-w", tmp_path, repo], cwd=installed.outside)
    (wheel,) = tmp_path.glob("digitcode-*.whl")
    top_level = {entry.split("/")[0] for entry in zipfile.ZipFile(wheel).namelist()}
    assert top_level == {"digitcode", "digitcode-0.1.0.dist-info"}, top_level
