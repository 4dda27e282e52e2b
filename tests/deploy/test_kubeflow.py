"""The Kubeflow side of the manifests: the ``TFJob`` component (Training Operator) and the ``kserve`` overlay
(``InferenceService``), rendered by ``kubectl kustomize`` and checked against the SDKs' models of the CRDs
(``tests/deploy/openapi_models.py``), their pod templates and the other objects against the Kubernetes schemas
(``kubernetes-validate --strict``), then the contracts with the code: same recipe as the single-node Job, the
chief writes where the service reads, probes on the Open Inference Protocol's health routes."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import ROOT, run_tool
from tests.deploy.openapi_models import SchemaError, validate

Objects = list[dict[str, Any]]
K8S_VERSION = kubernetes_validate.utils.latest_version()
CUSTOM = {("kubeflow.org/v1", "TFJob"), ("serving.kserve.io/v1beta1", "InferenceService")}


def render(kubectl: str, overlay: str) -> Objects:
    result = run_tool(kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    return [o for o in yaml.safe_load_all(result.stdout) if o]


@pytest.fixture(scope="module")
def kserve_objects(kubectl: str) -> Objects:
    return render(kubectl, "kserve")


@pytest.fixture(scope="module")
def cpu_objects(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> Objects:
    """The cpu overlay with its model-pvc component switched on (the single-node training Job)."""
    from tests.deploy.test_k8s import render as render_with

    return render_with(kubectl, "cpu", "model-pvc", tmp_path_factory.mktemp("cpu-model-pvc"))


def one(objects: Objects, kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _validate_pod_template(template: dict[str, Any], where: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", **template.get("metadata", {})}}
    pod["spec"] = template["spec"]
    try:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where} pod template invalid: {exc.message}")


def test_tfjob_matches_the_training_operator_schema(kserve_objects: Objects) -> None:
    tfjob = one(kserve_objects, "TFJob")
    assert tfjob["apiVersion"] == "kubeflow.org/v1"
    model = validate(tfjob, "KubeflowOrgV1TFJob")
    replicas = model.spec.tf_replica_specs
    assert set(replicas) == {"Chief", "Worker"}
    for name, spec in tfjob["spec"]["tfReplicaSpecs"].items():
        assert spec["restartPolicy"] in {"Always", "OnFailure", "Never", "ExitCode"}
        _validate_pod_template(spec["template"], name)
    assert model.spec.run_policy.suspend is True, "created suspended until the data is loaded"


def test_inference_service_matches_the_kserve_schema(kserve_objects: Objects) -> None:
    isvc = one(kserve_objects, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = validate(isvc, "V1beta1InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert model.spec.predictor.containers[0].name == "kserve-container"
    pod_fields = {k: v for k, v in predictor.items() if k in ("containers", "volumes", "securityContext")}
    _validate_pod_template({"spec": {**pod_fields, "serviceAccountName": predictor["serviceAccountName"]}}, "predictor")


def test_the_validator_refuses_what_the_schemas_refuse(kserve_objects: Objects) -> None:
    tfjob = one(kserve_objects, "TFJob")
    bad = copy.deepcopy(tfjob)
    bad["spec"]["tfReplicaSpecs"]["Chief"]["replica"] = 1  # typo of replicas
    with pytest.raises(SchemaError, match="unknown field"):
        validate(bad, "KubeflowOrgV1TFJob")
    bad = copy.deepcopy(tfjob)
    bad["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = "two"
    with pytest.raises(SchemaError, match="expected int"):
        validate(bad, "KubeflowOrgV1TFJob")
    bad = copy.deepcopy(tfjob)
    del bad["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(SchemaError, match="name"):
        validate(bad, "KubeflowOrgV1TFJob")
    isvc = copy.deepcopy(one(kserve_objects, "InferenceService"))
    isvc["spec"]["predictor"]["container"] = isvc["spec"]["predictor"].pop("containers")
    with pytest.raises(SchemaError, match="unknown field"):
        validate(isvc, "V1beta1InferenceService")


def test_other_objects_pass_strict_kubernetes_validation(kserve_objects: Objects) -> None:
    kinds = {o["kind"] for o in kserve_objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Job"}.isdisjoint(kinds), "KServe/TFJob replace them"
    for obj in kserve_objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid: {exc.message}")
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "mri-classifier"


def test_tfjob_runs_the_single_node_recipe(kserve_objects: Objects, cpu_objects: Objects) -> None:
    job_pod = one(cpu_objects, "Job")["spec"]["template"]["spec"]
    job_container = job_pod["containers"][0]
    tfjob = one(kserve_objects, "TFJob")
    configs = {o["metadata"]["name"] for o in kserve_objects if o["kind"] == "ConfigMap"}
    claims = {o["metadata"]["name"] for o in kserve_objects if o["kind"] == "PersistentVolumeClaim"}
    for name, spec in tfjob["spec"]["tfReplicaSpecs"].items():
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        assert container["name"] == "tensorflow", "the Training Operator injects TF_CONFIG and its port there"
        assert container["image"] == job_container["image"] and container["args"] == job_container["args"] == ["train"]
        assert container["resources"] == job_container["resources"]
        assert container["securityContext"] == job_container["securityContext"]
        assert pod["securityContext"] == job_pod["securityContext"] and pod["automountServiceAccountToken"] is False
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert set(mounts) == {m["mountPath"] for m in job_container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        config = volumes[mounts["/opt/ml/input/config"]["name"]]["configMap"]["name"]
        assert config in configs and config.startswith("mri-classifier-train-config-"), "the hashed ConfigMap"
        data = volumes[mounts["/opt/ml/input/data/train"]["name"]]["persistentVolumeClaim"]
        assert data == {"claimName": "mri-classifier-training-data", "readOnly": True}
        model_volume = volumes[mounts["/opt/ml/model"]["name"]]
        if name == "Chief":  # the chief exports into the store the service reads
            assert model_volume["persistentVolumeClaim"]["claimName"] == "mri-classifier-models" in claims
        else:  # workers discard their copy (training/cluster.py): they never touch the store
            assert "emptyDir" in model_volume
        assert {"name": "tfjob-port", "containerPort": 2222, "protocol": "TCP"} in container["ports"]
    policy = next(o for o in kserve_objects if o["metadata"]["name"] == "mri-classifier-train-cluster")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == tfjob["spec"]["tfReplicaSpecs"]["Chief"]["template"]["metadata"]["labels"]
    )
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 2222, "protocol": "TCP"}]


def test_inference_service_serves_the_model_store(kserve_objects: Objects) -> None:
    from service.config import Settings
    from service.http.routes import v2

    isvc = one(kserve_objects, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    container = predictor["containers"][0]
    assert container["args"] == ["serve"] and container["image"].startswith("registry.example.com/mri-classifier:")
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["STORAGE_URI"]["value"] == "pvc://mri-classifier-models/", "the claim the TFJob's chief writes"
    settings_map = next(
        o for o in kserve_objects if o["metadata"]["name"] == container["envFrom"][0]["configMapRef"]["name"]
    )
    assert settings_map["data"]["MRI_MODEL_DIR"] == "/mnt/models", "where KServe mounts the storageUri"
    # ready on apply: the built-in model until the TFJob has trained (tests/deploy/test_kserve_predictor.py)
    assert settings_map["data"]["MRI_BUILTIN_MODEL_UNTIL_TRAINED"] == "true"
    image = {"builtin_model_dir": "/opt/mri-classifier/model"}  # what the service image sets
    Settings(**image, **{k.removeprefix("MRI_").lower(): v for k, v in settings_map["data"].items()})
    paths = {route.path for route in v2.router.routes}  # type: ignore[attr-defined]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths and container[probe]["httpGet"]["port"] == 8080
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", "liveness never runs an inference"
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300
    for key in ("cpu", "memory"):
        assert key in container["resources"]["requests"] and key in container["resources"]["limits"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert predictor["labels"]["app.kubernetes.io/component"] == "api"
    policy = next(o for o in kserve_objects if o["metadata"]["name"] == "mri-classifier-api-ingress")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
