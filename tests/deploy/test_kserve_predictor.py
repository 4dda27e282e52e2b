"""The KServe predictor started as the rendered ``InferenceService`` starts it (its args, its settings ConfigMap,
its env, the image's environment), with the model store empty as it is until the TFJob has trained: ready on the
image's built-in model within the startup probe's window, never restarted, ``/readyz`` naming the built-in model
and the store it waits for; then the first trained version in the store replaces it with no moment not ready."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.conftest import ROOT, run_tool
from tests.processes import free_port, serve_command, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

#: What the service image sets (docker/Dockerfile, service targets): the built-in model is the repository's.
IMAGE_ENV = {"MRI_BUILTIN_MODEL_DIR": str(ROOT / "models" / "mri-classifier"), "MRI_HOST": "0.0.0.0"}
#: Where KServe mounts the storageUri (the model store claim).
KSERVE_MOUNT = "/mnt/models"
#: A value for the API-key Secret the manifest references (required, like the cluster's).
API_KEY = "k" * 32


def predictor(kubectl: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The rendered predictor container and the settings ConfigMap it reads."""
    result = run_tool(kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / "kserve"))
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    (isvc,) = [o for o in objects if o["kind"] == "InferenceService"]
    (container,) = isvc["spec"]["predictor"]["containers"]
    name = container["envFrom"][0]["configMapRef"]["name"]
    (settings,) = [o["data"] for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    return container, settings


def pod_environment(container: dict[str, Any], settings: dict[str, str], store: Path, port: int) -> dict[str, str]:
    """The container's environment as the kubelet builds it (image ENV, then envFrom, then env), with the store
    mounted at ``store`` instead of /mnt/models and the port moved to a free one on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MRI_", "SAGEMAKER_", "TF_FORCE"))}
    env.update(IMAGE_ENV)
    env.update(settings)
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif entry["valueFrom"]["secretKeyRef"]["key"] == "api-key":
            env[entry["name"]] = API_KEY
        else:
            assert entry["valueFrom"]["secretKeyRef"].get("optional"), entry  # the rotation key may be absent
    assert env["MRI_MODEL_DIR"] == KSERVE_MOUNT
    env.update(MRI_MODEL_DIR=str(store), MRI_HOST="127.0.0.1", MRI_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="2")
    return env


def test_the_predictor_is_ready_on_the_built_in_model_with_an_empty_store(kubectl: str, tmp_path: Path) -> None:
    container, settings = predictor(kubectl)
    store = tmp_path / "mnt-models"
    (store / "lost+found").mkdir(parents=True)  # a fresh claim, as the TFJob has not written to it yet
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    startup = container["startupProbe"]
    window = startup["failureThreshold"] * startup["periodSeconds"]
    log_path = tmp_path / "predictor.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*serve_command(), *container["args"]],
            env=pod_environment(container, settings, store, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        started = time.monotonic()
        with httpx.Client(timeout=startup["timeoutSeconds"]) as client:
            while True:  # the startup probe, as the kubelet runs it
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() - started < window, f"startup probe would restart the pod: {log_path}"
                try:
                    if client.get(base + startup["httpGet"]["path"]).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            assert client.get(base + container["readinessProbe"]["httpGet"]["path"]).status_code == 200
            body = client.get(base + "/readyz").json()
            assert body["status"] == "ready"
            assert body["source"] == {
                "origin": "built-in",
                "model_dir": IMAGE_ENV["MRI_BUILTIN_MODEL_DIR"],
                "waiting_for": str(store),
            }
            assert body["model"]["version"] == 3 and body["model"]["runtime_reason"].startswith("openvino on CPU")

            # The TFJob's chief exports its first version into the store: it replaces the built-in model.
            shutil.copytree(ROOT / "models" / "mri-classifier" / "3", tmp_path / "export")
            (tmp_path / "export").rename(store / "1")
            deadline = time.monotonic() + 180
            while (body := client.get(base + "/readyz").json())["source"]["origin"] == "built-in":
                assert body["status"] == "ready", "the built-in model serves until the trained one is warm"
                assert client.get(base + startup["httpGet"]["path"]).status_code == 200
                assert time.monotonic() < deadline, f"the trained version was never served: {log_path}"
                time.sleep(0.2)
            assert body["status"] == "ready" and body["model"]["version"] == 1  # the number of its folder
            assert body["source"] == {"origin": "configured", "model_dir": str(store)}
            assert process.poll() is None
    finally:
        stop_process(process)
