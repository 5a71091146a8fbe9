"""The shipped Prometheus rules (deploy/prometheus): promtool's checks and unit tests, and a real
Prometheus server, with the shipped configuration, scraping a running service fed outliers
until the alerts fire. Needs Debian's ``prometheus`` package (``make prometheus-test``
installs it); not part of the default ``pytest`` run."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import DATA, ROOT, free_port, running_service
from training.data import load_optdigits

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

RULES = ROOT / "deploy" / "prometheus"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `make prometheus-test` installs Debian's prometheus")
    return found


def test_promtool_checks_the_rules_and_the_configuration():
    for command in (
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        done = subprocess.run(
            [_tool("promtool"), *command], cwd=RULES, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_unit_tests_pass():
    done = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def _live_copy(tmp_path: Path, target: str) -> Path:
    """The shipped configuration and rules with the service's address, and the intervals and
    ``for`` durations of a test (1 s, 5 s instead of 15 s and 10 minutes); nothing else changes."""
    config = yaml.safe_load((RULES / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["for"] == "10m"
            rule["for"] = "5s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    return tmp_path / "prometheus.yml"


def test_a_live_prometheus_fires_the_alerts_when_outliers_arrive(tmp_path):
    prometheus = _tool("prometheus")
    inverted = (16.0 - load_optdigits(DATA / "optdigits.tes")[0][:50]).tolist()
    with running_service({"DIGITCODE_WORKERS": "1", "DIGITCODE_LOG_LEVEL": "warning"}) as (
        _,
        url,
    ):
        config = _live_copy(tmp_path, url.removeprefix("http://"))
        port = free_port()
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("w"),
        )
        stop = threading.Event()

        def feed() -> None:  # outliers only: inverted test digits
            with httpx.Client(base_url=url, timeout=10) as client:
                while not stop.is_set():
                    assert (
                        client.post("/reconstruct", json={"vectors": inverted}).status_code == 200
                    )
                    stop.wait(0.2)

        feeder = threading.Thread(target=feed)
        feeder.start()
        firing: set[str] = set()
        try:
            deadline = time.monotonic() + 120
            while firing != {"DigitcodeOutlierRateHigh", "DigitcodeErrorMedianShift"}:
                assert server.poll() is None, (tmp_path / "prometheus.log").read_text()
                assert time.monotonic() < deadline, (
                    f"alerts firing: {sorted(firing)}; log:\n"
                    + (tmp_path / "prometheus.log").read_text()[-3000:]
                )
                time.sleep(1)
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5)
                except httpx.TransportError:
                    continue
                alerts = answer.json()["data"]["alerts"]
                firing = {
                    a["labels"]["alertname"]
                    for a in alerts
                    if a["state"] == "firing" and a["labels"]["model"] == "digitcode"
                }
            # What Prometheus scraped: every vector fed was an outlier (all inverted digits are).
            query = (
                "sum(increase(digitcode_outliers_total[1m]))"
                " / sum(increase(digitcode_reconstruction_error_count[1m]))"
            )
            answer = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
            )
            assert float(answer.json()["data"]["result"][0]["value"][1]) == 1.0
        finally:
            stop.set()
            feeder.join(timeout=30)
            server.terminate()
            server.wait(timeout=30)
