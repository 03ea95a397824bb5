"""deploy/kubernetes: every manifest valid against a current Kubernetes release's schemas
(strict: unknown fields fail), and the manifests, compose.yaml, the shipped config and
docs/deploy.md naming the same commands, ports, probes and environment."""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any
from urllib.parse import urlparse

import json5
import kubernetes_validate
import pytest
import yaml

from devkit.processes import REPO_ROOT
from services.config import WorkerConfig

MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
ROLES = {"edge": "edge", "agent-worker": "agent-worker"}  # compose service -> Deployment


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text()))


def resources() -> list[dict[str, Any]]:
    return [
        document
        for name in kustomization()["resources"]
        for document in yaml.safe_load_all((MANIFESTS / name).read_text())
    ]


def resource(kind: str, name: str) -> dict[str, Any]:
    return next(r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name)


def container(deployment: str) -> dict[str, Any]:
    (only,) = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def compose_service(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"][name])


def shipped_config() -> dict[str, Any]:
    return dict(json5.loads((REPO_ROOT / "deploy" / "clawgate.json5").read_text()))


def test_every_manifest_is_valid_kubernetes_in_strict_mode() -> None:
    kinds = sorted(r["kind"] for r in resources())
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy"]
        + ["PodDisruptionBudget", "PodDisruptionBudget", "Service", "Service"]
    )
    for document in resources():
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(resource("Deployment", "agent-worker"))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 45  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_renders_the_kustomization() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True
    ).stdout
    documents = list(yaml.safe_load_all(rendered))
    assert len(documents) == len(resources())
    assert {d["metadata"]["namespace"] for d in documents} == {"clawgate"}
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_config_map_is_the_config_compose_mounts() -> None:
    data = resource("ConfigMap", "clawgate-config")["data"]["clawgate.json5"]
    assert data == (REPO_ROOT / "deploy" / "clawgate.json5").read_text()
    mount = "/etc/clawgate/clawgate.json5"
    assert any(volume.endswith(f":{mount}:ro") for volume in compose_service("edge")["volumes"])
    for deployment in ROLES.values():
        (volume_mount,) = container(deployment)["volumeMounts"]
        assert f"{volume_mount['mountPath']}/clawgate.json5" == mount


def test_each_role_runs_the_compose_command_with_the_same_environment() -> None:
    for service, deployment in ROLES.items():
        assert container(deployment)["args"] == compose_service(service)["command"]
        names = {variable["name"] for variable in container(deployment)["env"]}
        assert names == set(compose_service(service)["environment"]), deployment


def test_ports_agree_with_the_config_and_compose() -> None:
    config = shipped_config()
    edge_port = config["gateway"]["port"]
    worker_port = int(config["worker"]["listen"].rpartition(":")[2])
    assert container("edge")["ports"] == [{"name": "http", "containerPort": edge_port}]
    assert compose_service("edge")["ports"] == [f"{edge_port}:{edge_port}"]
    assert container("agent-worker")["ports"] == [{"name": "grpc", "containerPort": worker_port}]
    (headless,) = resource("Service", "agent-worker")["spec"]["ports"]
    assert headless["port"] == worker_port
    assert resource("Service", "agent-worker")["spec"]["clusterIP"] == "None"
    workers = next(e["value"] for e in container("edge")["env"] if e["name"] == "CLAWGATE_WORKERS")
    assert (
        workers
        == f"dns:///agent-worker.{kustomization()['namespace']}.svc.cluster.local:{worker_port}"
    )
    (policy_port,) = resource("NetworkPolicy", "agent-worker-from-edges")["spec"]["ingress"][0][
        "ports"
    ]
    assert policy_port["port"] == worker_port


def test_probes_are_the_ones_compose_uses() -> None:
    edge = container("edge")
    compose_check = compose_service("edge")["healthcheck"]["test"]
    assert urlparse(compose_check[-1]).path == edge["readinessProbe"]["httpGet"]["path"]
    assert edge["livenessProbe"]["httpGet"]["path"] == "/healthz"
    worker = container("agent-worker")
    assert compose_service("agent-worker")["healthcheck"]["test"][1:] == [
        "clawgate", "probe", "--worker", f"127.0.0.1:{worker['readinessProbe']['grpc']['port']}",
    ]  # fmt: skip


def test_workers_outlive_their_grace_and_only_edges_reach_them() -> None:
    pod = resource("Deployment", "agent-worker")["spec"]["template"]
    grace = WorkerConfig().shutdown_grace_seconds
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace
    policy = resource("NetworkPolicy", "agent-worker-from-edges")["spec"]
    assert policy["podSelector"]["matchLabels"] == pod["metadata"]["labels"]
    edge_labels = resource("Deployment", "edge")["spec"]["template"]["metadata"]["labels"]
    assert policy["ingress"][0]["from"] == [{"podSelector": {"matchLabels": edge_labels}}]
    target = resource("HorizontalPodAutoscaler", "agent-worker")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "agent-worker")
    assert resource("Deployment", "edge")["spec"]["replicas"] >= 2


def test_the_deploy_docs_name_what_the_manifests_use() -> None:
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert "kubectl apply -k deploy/kubernetes" in docs
    for deployment in ROLES.values():
        for variable in container(deployment)["env"]:
            assert variable["name"] in docs, variable["name"]
            key = variable.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
            assert key is None or key in docs, key
    pod = resource("Deployment", "agent-worker")["spec"]["template"]["spec"]
    grace = f"terminationGracePeriodSeconds: {pod['terminationGracePeriodSeconds']}"
    words = ["/readyz", "/healthz", "18789", "50051", "grpc:", grace]
    for word in words + ["NetworkPolicy", "HorizontalPodAutoscaler", "PodDisruptionBudget"]:
        assert word in docs, word
