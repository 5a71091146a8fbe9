"""What the two benchmark runners share: their run options and what they record."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.machine import git_commit, load_average
from benchmarks.peers import run as peers_run


@pytest.mark.parametrize(("runner", "duration"), [(run, 6.0), (peers_run, 5.0)])
def test_both_runners_take_the_same_run_options(runner, duration):
    args = runner.parse_args(["--rounds", "2", "--warmup", "0.5", "--no-pin"])
    assert (args.rounds, args.duration, args.warmup, args.no_pin) == (2, duration, 0.5, True)
    assert args.json == runner.DEFAULT_JSON


@pytest.mark.parametrize("runner", [run, peers_run])
@pytest.mark.parametrize("bad", [["--rounds", "0"], ["--duration", "0"], ["--warmup", "-1"]])
def test_a_run_that_measures_nothing_is_a_usage_error(runner, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        runner.parse_args(bad)
    assert exc.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_the_commit_says_when_the_tree_is_dirty(tmp_path: Path):
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=tmp_path, capture_output=True, text=True)
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "--short", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "f").write_text("2")
    assert git_commit(tmp_path) == f"{head}-dirty"


def test_the_load_average_is_the_first_field_of_proc_loadavg():
    proc = Path("/proc/loadavg")
    if not proc.is_file():
        pytest.skip("no /proc/loadavg here")
    assert load_average() == pytest.approx(float(proc.read_text().split()[0]), abs=5.0)
