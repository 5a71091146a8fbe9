"""One virtualenv per peer, under ``build/peers/<name>/venv``, from a pinned requirements file.

A venv is created with this interpreter's ``-m venv`` and ``pip install -r
benchmarks/peers/requirements-<name>.txt``; a stamp in it records the sha256 of that file, so
the next run reuses it as long as the file is unchanged (and reinstalls when it changed). The
installs hold a lock on ``build/peers/<name>/.lock``, so two runs never install into one venv at
once.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from pathlib import Path

__all__ = ["STAMP", "ensure_venv", "requirements_file", "venv_bin"]

HERE = Path(__file__).resolve().parent
STAMP = ".installed-requirements"


def requirements_file(name: str) -> Path:
    """``benchmarks/peers/requirements-<name>.txt``."""
    return HERE / f"requirements-{name}.txt"


def venv_bin(build_dir: Path, name: str) -> Path:
    """The ``bin`` directory of peer ``name``'s venv."""
    return build_dir / name / "venv" / "bin"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_venv(build_dir: Path, name: str, *, python: str = sys.executable) -> Path:
    """Create or reuse peer ``name``'s venv; return its ``bin`` directory.

    Parameters
    ----------
    build_dir : Path
        ``build/peers`` (git-ignored).
    name : str
        ``mlflow``, ``bentoml`` or ``litserve``.
    python : str
        The interpreter whose ``-m venv`` creates it (Python 3.11, as the project's).

    Raises
    ------
    subprocess.CalledProcessError
        If creating the venv or installing fails.
    """
    requirements = requirements_file(name)
    digest = _digest(requirements)
    venv = build_dir / name / "venv"
    stamp = venv / STAMP
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text(encoding="ascii").strip() == digest:
            print(f"bench-peers: {name}: reusing {venv} ({requirements.name} unchanged)")
            return venv / "bin"
        print(f"bench-peers: {name}: installing {requirements.name} into {venv}", flush=True)
        stamp.unlink(missing_ok=True)
        if not (venv / "bin" / "python").exists():
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.write_text(digest + "\n", encoding="ascii")
    return venv / "bin"
