"""The Kubernetes manifests: valid against the Kubernetes schemas, and safe as configured."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.admission import memory_needed
from service.settings import WORKER_BASE_MEMORY, Settings, budget_for
from tests.conftest import ROOT

MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
K8S_VERSION = "1.30.0"


def _load(path: Path) -> dict:
    document: dict = yaml.safe_load(path.read_text())
    return document


def _by_kind() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in map(_load, MANIFESTS)}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path):
    # strict: unknown fields are errors too
    kubernetes_validate.validate(_load(path), K8S_VERSION, strict=True)


def test_validation_catches_a_mistake():
    deployment = _by_kind()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"][
        "pathh"
    ] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_all_kinds_present():
    assert set(_by_kind()) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    }


def test_deployment_is_locked_down_and_probed():
    pod = _by_kind()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_configmap_keys_are_real_settings():
    data = _by_kind()["ConfigMap"]["data"]
    known = {f"DIGITCODE_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= known
    env = {key.removeprefix("DIGITCODE_").lower(): value for key, value in data.items()}
    settings = Settings(**env)  # every value parses
    assert settings.workers == 1


def test_hpa_targets_the_deployment():
    hpa = _by_kind()["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == _by_kind()["Deployment"]["metadata"]["name"]


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``256Mi``, ``1Gi``, ``300M``) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def _container_settings() -> tuple[dict, Settings]:
    kinds = _by_kind()
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {k.removeprefix("DIGITCODE_").lower(): v for k, v in kinds["ConfigMap"]["data"].items()}
    return container, Settings(**env)


def test_memory_limit_gives_each_worker_its_budget_and_the_largest_request_fits():
    container, settings = _container_settings()
    limit = _bytes(container["resources"]["limits"]["memory"])
    # What the service derives in this container (README "Memory"): per worker, the limit
    # less what a worker needs besides its requests.
    budget = budget_for(limit, settings.workers)
    assert budget == limit // settings.workers - WORKER_BASE_MEMORY
    assert budget >= memory_needed(settings.body_limit), "the largest request would be 413"
    assert _bytes(container["resources"]["requests"]["memory"]) >= WORKER_BASE_MEMORY


def test_termination_grace_period_covers_drain_and_shutdown():
    pod = _by_kind()["Deployment"]["spec"]["template"]["spec"]
    _, settings = _container_settings()
    needed = settings.drain_seconds + settings.shutdown_timeout
    assert pod["terminationGracePeriodSeconds"] > needed
