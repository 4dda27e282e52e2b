"""Model directory faults and hot reload (TensorFlow Serving's behaviour).

A missing, empty, corrupt or half-written model directory, or metadata whose classes differ: the service stays
up, ``/readyz`` and ``/ping`` answer 503 with the reason, and no route ever answers a prediction. A new version
dropped into the directory is served only once it has loaded and warmed; until then the old one serves, and a
broken version leaves the old one serving (logged and counted).
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.inference import classifier as classifier_module
from service.inference.classifier import LoadedModel
from tests.reliability import payloads
from tests.service.conftest import MODEL_NAME, make_settings

POLL_S = 0.1
PREDICT_ROUTES = ("/predict", "/invocations", f"/v1/models/{MODEL_NAME}:predict")


def add_version(model_root: Path, root: Path, version: int, edit: Callable[[Path], None] | None = None) -> Path:
    """Copy the tiny model as ``root/<version>`` (metadata says that version), atomically, after ``edit``."""
    staging = root / f".tmp-{version}"
    shutil.copytree(model_root / "1", staging)
    meta_path = staging / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": version}))
    if edit is not None:
        edit(staging)
    root.mkdir(parents=True, exist_ok=True)
    return staging.rename(root / str(version))


def corrupt_graph(version_dir: Path) -> None:
    (version_dir / "saved_model.pb").write_bytes(b"\x08\x01garbage, not a protocol buffer" * 10)


def drop_variables(version_dir: Path) -> None:
    shutil.rmtree(version_dir / "variables")


def drop_metadata(version_dir: Path) -> None:
    (version_dir / "metadata.json").unlink()


def edit_metadata(**changes: Any) -> Callable[[Path], None]:
    def edit(version_dir: Path) -> None:
        path = version_dir / "metadata.json"
        meta = json.loads(path.read_text())
        for key, value in changes.items():
            if key == "image_size":
                meta["preprocessing"]["image_size"] = value
            else:
                meta[key] = value
        path.write_text(json.dumps(meta))

    return edit


def broken_json(version_dir: Path) -> None:
    (version_dir / "metadata.json").write_text('{"classes": ["glioma", ')


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def wait_for_polls(client: TestClient, count: int) -> None:
    """Wait until the app's model watcher has finished ``count`` more polls (instead of sleeping)."""
    watcher = client.app.state.watcher  # type: ignore[attr-defined]
    target = watcher.polls + count
    wait_for(lambda: watcher.polls >= target)


def predict(client: TestClient, route: str = "/predict") -> Any:
    if route == "/predict":
        return client.post(route, files={"file": ("scan.jpg", payloads.good_jpeg(), "image/jpeg")})
    if route == "/invocations":
        return client.post(route, content=payloads.good_jpeg(), headers={"Content-Type": "image/jpeg"})
    return client.post(route, json={"instances": [{"b64": base64.b64encode(payloads.good_jpeg()).decode()}]})


def served_version(client: TestClient) -> int:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    return int(response.json()["model"]["version"])


def reloads(client: TestClient, result: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'mri_model_reloads_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """``start(model_dir, **settings)``: the app loading its own model in the background, polling every 0.1 s."""
    clients: list[TestClient] = []

    def _start(model_dir: Path, **overrides: Any) -> TestClient:
        settings: Settings = make_settings(model_dir, model_poll_interval_s=POLL_S, **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield _start
    for client in clients:
        client.__exit__(None, None, None)


def assert_not_ready_and_never_predicts(client: TestClient, reason: str) -> None:
    wait_for(lambda: client.get("/readyz").json()["status"] == "failed")
    assert client.get("/healthz").status_code == 200  # the process is up
    for probe in ("/readyz", "/ping"):
        response = client.get(probe)
        assert response.status_code == 503
        assert reason in response.json()["reason"], response.json()
    for route in PREDICT_ROUTES:
        response = predict(client, route)
        assert response.status_code == 503, response.text
        assert reason in response.json()["error"] and "predictions" not in response.json()
    status = client.get(f"/v1/models/{MODEL_NAME}").json()["model_version_status"][0]
    assert status["state"] == "END" and reason in status["status"]["error_message"]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


FAULTS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "missing directory": (lambda root, model: root / "nowhere", "does not exist"),
    "empty directory": (lambda root, model: _mkdir(root), "no SavedModel version found"),
    "only an export in progress": (
        lambda root, model: (shutil.copytree(model / "1", root / ".tmp-1-abc"), root)[1],
        "no SavedModel version found",
    ),
    "corrupt graph": (lambda root, model: add_version(model, root, 1, corrupt_graph).parent, "failed to load"),
    "half-written: no variables": (
        lambda root, model: add_version(model, root, 1, drop_variables).parent,
        "failed to load",
    ),
    "half-written: no metadata": (
        lambda root, model: add_version(model, root, 1, drop_metadata).parent,
        "metadata.json missing",
    ),
    "metadata not JSON": (lambda root, model: add_version(model, root, 1, broken_json).parent, "not valid JSON"),
    "classes differ": (
        lambda root, model: (
            add_version(model, root, 1, edit_metadata(classes=["meningioma", "glioma", "no_tumor", "pituitary"])).parent
        ),
        "class order mismatch",
    ),
    "classes missing one": (
        lambda root, model: (
            add_version(model, root, 1, edit_metadata(classes=["glioma", "meningioma", "no_tumor"])).parent
        ),
        "class order mismatch",
    ),
    "image size differs from the graph": (
        lambda root, model: add_version(model, root, 1, edit_metadata(image_size=64)).parent,
        "does not match the model input",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_model_directory_leaves_the_service_up_and_not_ready(
    start: Callable[..., TestClient], model_root: Path, tmp_path: Path, fault: str
) -> None:
    make, reason = FAULTS[fault]
    client = start(make(tmp_path / "models", model_root))
    assert_not_ready_and_never_predicts(client, reason)


def test_a_model_that_appears_later_is_served(start: Callable[..., TestClient], model_root: Path, tmp_path: Path):
    root = tmp_path / "models"
    client = start(root)
    assert_not_ready_and_never_predicts(client, "does not exist")
    add_version(model_root, root, 1)
    wait_for(lambda: client.get("/readyz").status_code == 200)
    response = predict(client)
    assert response.status_code == 200 and response.json()["model_version"] == 1
    assert sum(response.json()["predictions"][0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_a_new_version_is_swapped_in_only_once_loaded_and_warm(
    start: Callable[..., TestClient], model_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "models"
    add_version(model_root, root, 1)
    client = start(root)
    wait_for(lambda: client.get("/readyz").status_code == 200)
    real_load = classifier_module.load_model
    loading, release = threading.Event(), threading.Event()

    def slow_load(settings: Settings, version_dir: Path | None = None) -> LoadedModel:
        loading.set()
        assert release.wait(60)
        return real_load(settings, version_dir)

    monkeypatch.setattr(classifier_module, "load_model", slow_load)
    add_version(model_root, root, 2)
    assert loading.wait(30)
    for _ in range(3):  # while version 2 loads, version 1 serves and the service stays ready
        assert served_version(client) == 1
        response = predict(client)
        assert response.status_code == 200 and response.json()["model_version"] == 1
    release.set()
    wait_for(lambda: served_version(client) == 2)
    response = predict(client)
    assert response.status_code == 200 and response.json()["model_version"] == 2


def test_requests_during_a_swap_are_all_answered(
    start: Callable[..., TestClient], model_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    add_version(model_root, root, 1)
    client = start(root)
    wait_for(lambda: client.get("/readyz").status_code == 200)
    statuses: list[int] = []
    versions: set[int] = set()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            response = predict(client)
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.add(response.json()["model_version"])

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        add_version(model_root, root, 2)
        wait_for(lambda: served_version(client) == 2)
        wait_for(lambda: 2 in versions)
    finally:
        stop.set()
        thread.join(30)
    assert statuses and set(statuses) == {200}
    assert versions == {1, 2}


BROKEN_VERSIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt graph": (corrupt_graph, "failed to load"),
    "classes differ": (edit_metadata(classes=["glioma", "meningioma", "pituitary", "no_tumor"]), "class order"),
    "no metadata": (drop_metadata, "metadata.json missing"),
}


@pytest.mark.parametrize("broken", list(BROKEN_VERSIONS))
def test_a_broken_new_version_leaves_the_old_one_serving(
    start: Callable[..., TestClient],
    model_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    edit, reason = BROKEN_VERSIONS[broken]
    root = tmp_path / "models"
    add_version(model_root, root, 1)
    client = start(root)
    wait_for(lambda: client.get("/readyz").status_code == 200)
    failures = reloads(client, "failure")
    add_version(model_root, root, 2, edit)
    wait_for(lambda: reloads(client, "failure") == failures + 1)
    wait_for_polls(client, 5)  # later polls do not retry the same broken files
    assert reloads(client, "failure") == failures + 1
    assert served_version(client) == 1
    response = predict(client)
    assert response.status_code == 200 and response.json()["model_version"] == 1
    assert any("version 2 not loaded" in r.message and "still serving version 1" in r.message for r in caplog.records)
    assert reason in caplog.text


def test_a_half_written_version_is_picked_up_once_complete(
    start: Callable[..., TestClient], model_root: Path, tmp_path: Path
) -> None:
    """A copy that is not atomic (``cp -r`` into the model directory): the first attempt fails while the
    variables are missing, and the version is loaded once its files change."""
    root = tmp_path / "models"
    add_version(model_root, root, 1)
    client = start(root)
    wait_for(lambda: client.get("/readyz").status_code == 200)
    failures, successes = reloads(client, "failure"), reloads(client, "success")
    partial = add_version(model_root, root, 2, drop_variables)
    wait_for(lambda: reloads(client, "failure") > failures)
    assert served_version(client) == 1
    shutil.copytree(model_root / "1" / "variables", partial / "variables")  # the copy completes
    wait_for(lambda: served_version(client) == 2)
    assert reloads(client, "success") == successes + 1


def test_removing_the_served_version_rolls_back(
    start: Callable[..., TestClient], model_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    add_version(model_root, root, 1)
    add_version(model_root, root, 2)
    client = start(root)
    wait_for(lambda: client.get("/readyz").status_code == 200)
    assert served_version(client) == 2
    shutil.rmtree(root / "2")
    wait_for(lambda: served_version(client) == 1)
    shutil.rmtree(root / "1")  # nothing left on disk: keep serving what is in memory
    wait_for_polls(client, 5)
    assert served_version(client) == 1 and predict(client).status_code == 200


def test_a_pinned_version_is_not_replaced(start: Callable[..., TestClient], model_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    add_version(model_root, root, 1)
    client = start(root, model_version=1)
    wait_for(lambda: client.get("/readyz").status_code == 200)
    add_version(model_root, root, 2)
    wait_for_polls(client, 10)
    assert served_version(client) == 1


def test_a_copy_that_completes_during_a_failed_first_load_is_retried(
    start: Callable[..., TestClient], model_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load fails on a half-copied version, and the copy (a sidecar, an S3 sync) finishes while that
    load is failing: the next poll must see new files and retry, instead of staying not ready for good."""
    root = tmp_path / "models"
    partial = add_version(model_root, root, 1, drop_variables)
    real_load = classifier_module.load_model

    def load_while_the_copy_completes(settings: Settings, version_dir: Path | None = None) -> LoadedModel:
        try:
            return real_load(settings, version_dir)
        finally:
            if not (partial / "variables").exists():
                shutil.copytree(model_root / "1" / "variables", partial / "variables")

    monkeypatch.setattr(classifier_module, "load_model", load_while_the_copy_completes)
    client = start(root)
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30)
    assert served_version(client) == 1 and predict(client).status_code == 200
