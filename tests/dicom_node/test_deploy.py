"""How the node is run: the image's entrypoint takes ``dicom-node``, the compose service under its profile, and
the Kubernetes component switched on the documented way, rendered by kubectl and validated strictly, with
settings that are fields of the two settings classes and a pod as restricted as the API's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.config import DicomNodeSettings, Settings
from tests.deploy.conftest import ROOT, kubectl
from tests.deploy.test_k8s import K8S_VERSIONS, one, render
from training.cli import main

__all__ = ["kubectl"]
FIELDS = {f"MRI_{name.upper()}" for name in Settings.model_fields} | {
    f"MRI_DICOM_NODE_{name.upper()}" for name in DicomNodeSettings.model_fields
}
NODE_LABELS = {"app.kubernetes.io/name": "mri-classifier", "app.kubernetes.io/component": "dicom-node"}


def test_the_command_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "dicom-node" in capsys.readouterr().out
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["mri-classifier"]' in dockerfile and "EXPOSE 8080 11112 8081" in dockerfile


def test_compose_runs_the_node_under_its_profile() -> None:
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["dicom-node"]
    assert service["profiles"] == ["dicom"] and service["command"] == ["dicom-node"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert all(port.startswith("${DICOM_BIND:-127.0.0.1}:") for port in service["ports"]), "loopback unless asked"
    assert service["healthcheck"]["test"] == ["CMD", "mri-healthcheck", "/readyz", "8081"]
    assert set(service["environment"]) <= FIELDS
    assert "MRI_DICOM_NODE_SPOOL_DIR" not in service["environment"], "nothing on disk unless configured"


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_kubernetes_component_renders_valid_and_restricted(kubectl: str, overlay: str, tmp_path: Path) -> None:
    objects = render(kubectl, overlay, "dicom-node", tmp_path)
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    deployment = one(objects, "Deployment", "mri-classifier-dicom-node")
    assert one(objects, "Deployment", "mri-classifier")["spec"]["replicas"] >= 1, "the API stays"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["dicom-node"] and deployment["spec"]["replicas"] == 1
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"dicom": 11112, "http-metrics": 8081}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]

    maps = [ref["configMapRef"]["name"] for ref in container["envFrom"] if "configMapRef" in ref]
    settings: dict[str, Any] = {}
    for name in maps:
        settings.update(one(objects, "ConfigMap", name)["data"])
    assert set(settings) <= FIELDS, f"unknown settings: {sorted(set(settings) - FIELDS)}"
    DicomNodeSettings(
        _env_file=None,  # type: ignore[call-arg]
        **{
            k.removeprefix("MRI_DICOM_NODE_").lower(): v for k, v in settings.items() if k.startswith("MRI_DICOM_NODE_")
        },
    )
    assert "MRI_DICOM_NODE_SPOOL_DIR" not in settings

    service = one(objects, "Service", "mri-classifier-dicom-node")
    assert service["spec"]["selector"] == NODE_LABELS
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"dicom": 11112, "http-metrics": 8081}
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    ingress = policies["mri-classifier-dicom-node-ingress"]
    assert ingress["podSelector"]["matchLabels"] == NODE_LABELS
    assert [p["port"] for rule in ingress["ingress"] for p in rule["ports"]] == ["dicom", "http-metrics"]
    egress = policies["mri-classifier-dicom-node-egress"]
    assert egress["podSelector"]["matchLabels"] == NODE_LABELS, "only the node gets egress to the PACS"


def test_the_docs_show_how_to_wire_a_pacs() -> None:
    page = (ROOT / "docs" / "dicom-node.md").read_text()
    for needed in ("Orthanc", "dcm4chee", "DicomModalities", "MRI_DICOM_NODE_ALLOWED_AETS", "STOW-RS", "0xA700"):
        assert needed in page, needed
    for name in re.findall(r"MRI_DICOM_NODE_[A-Z0-9_]+", page):
        assert name in FIELDS, name
