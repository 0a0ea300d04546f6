"""deploy/: every manifest passes the Kubernetes schema (offline), and they fit together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.config import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes the manifests claim (native gRPC probes are GA since 1.27),
# and the newest schema kubernetes-validate ships.
# What the manifests assume of PostgreSQL (docs/deploy.md, "The connection budget").
POSTGRES_MAX_CONNECTIONS = 200
RESERVED_CONNECTIONS = 10  # superuser_reserved_connections, operators, monitoring
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def manifest_files() -> list[Path]:
    # deploy/monitoring/ holds Prometheus rules and a Grafana dashboard, not
    # Kubernetes objects: tests/deploy/test_monitoring.py checks them.
    monitoring = DEPLOY / "monitoring"
    return sorted(p for p in DEPLOY.rglob("*.yaml") if monitoring not in p.parents)


def load_all() -> list[dict[str, Any]]:
    return [
        document
        for path in manifest_files()
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in load_all()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_passes_the_strict_schema(path: Path, version: str) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        # strict: unknown fields fail too (a misspelt key is not silently ignored)
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = find("Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, VERSIONS[0], strict=True)


def server_container() -> dict[str, Any]:
    (container,) = find("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_deployment_probes_use_grpc_health_on_the_health_port() -> None:
    container = server_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = find("ConfigMap", "concert-config")["data"]
    assert int(config["CONCERT_LISTEN"].rpartition(":")[2]) == ports["grpc"]
    assert int(config["CONCERT_METRICS_LISTEN"].rpartition(":")[2]) == ports["metrics"]
    assert int(config["CONCERT_HEALTH_LISTEN"].rpartition(":")[2]) == ports["health"]
    services = {"startupProbe": "liveness", "readinessProbe": "readiness"}
    services["livenessProbe"] = "liveness"
    for probe, service in services.items():
        assert container[probe]["grpc"] == {"port": ports["health"], "service": service}, probe


def test_shutdown_fits_in_the_termination_grace_period() -> None:
    pod = find("Deployment")["spec"]["template"]["spec"]
    container = server_container()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = float(find("ConfigMap", "concert-config")["data"]["CONCERT_SHUTDOWN_GRACE_SECONDS"])
    # preStop, then SIGTERM: drain for `grace`, close the pool; before SIGKILL.
    assert pre_stop >= 5
    assert pre_stop + grace + 5 <= pod["terminationGracePeriodSeconds"]
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= pre_stop + grace


def test_pods_are_locked_down_and_sized() -> None:
    pod = find("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = server_container()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"configMapRef": "concert-config", "secretRef": "concert-secrets"}
    assert find("Secret", "concert-secrets")  # the example names the Secret they read
    assert find("Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_selectors_and_targets_agree() -> None:
    deployment = find("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert find("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = [d for d in load_all() if d["kind"] == "Service"]
    assert services
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        assert {"grpc"} <= {p["targetPort"] for p in service["spec"]["ports"]}
    target = find("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_migration_job_runs_the_migrate_command_with_the_same_image_and_config() -> None:
    job = find("Job", "concert-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert container["image"] == server_container()["image"]
    assert container["envFrom"] == server_container()["envFrom"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_configuration_is_one_the_server_accepts() -> None:
    config = find("ConfigMap", "concert-config")["data"]
    secret = find("Secret", "concert-secrets")["stringData"]
    unknown = (set(config) | set(secret)) - set(VARIABLES)
    assert not unknown, f"not server settings: {unknown}"
    settings = Settings.from_env({**config, **secret})  # validates every value
    hpa = find("HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] >= 2  # the PDB's one voluntary disruption leaves one serving
    # The connection budget of docs/deploy.md: the most pods with full pools, plus
    # the migration Job and PostgreSQL's reserved slots, within max_connections.
    budget = hpa["maxReplicas"] * settings.pool_max_size + 1 + RESERVED_CONNECTIONS
    assert budget <= POSTGRES_MAX_CONNECTIONS
