"""The SageMaker contract against a real ``mri-classifier serve`` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.imaging.preprocessing import PreprocessConfig, preprocess, to_model_input
from tests.processes import free_port, inflight_requests, read_answer, serve_command, start_upload
from tests.service import images
from tests.service.conftest import IMAGE_SIZE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)
TOLERANCE = {"f32": 1e-4, "f16": 0.01, "bf16": 0.03}


#: A ``sitecustomize`` for the server process: its model load waits (30 s at most) until the test creates
#: ``gate``, so that the server is seen answering while the model loads (the load is otherwise too quick to be
#: sure to see it), and leaves ``gate.passed`` behind as the proof that the load went through the gate.
LOAD_GATE = """
import pathlib, time
import service.inference.classifier as classifier
_real = classifier.load_model
def _gated(*args, **kwargs):
    gate = pathlib.Path({gate!r})
    deadline = time.monotonic() + 30
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pathlib.Path(str(gate) + ".passed").touch()
    return _real(*args, **kwargs)
classifier.load_model = _gated
"""


@pytest.fixture
def server(model_root, tmp_path):
    """``mri-classifier serve`` on a free port (runtime auto) whose model load waits for ``<tmp_path>/gate``;
    yields (process, base URL, log path)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MRI_", "SAGEMAKER_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", SAGEMAKER_BIND_TO_PORT=str(port), MRI_MAX_BATCH_SIZE="4")
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(LOAD_GATE.format(gate=str(tmp_path / "gate")))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path / "hook"), env.get("PYTHONPATH", "")) if p)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*serve_command(), "serve", "--model-dir", str(model_root), "--host", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _wait_for_ping(base: str, process: subprocess.Popen, gate: Path, timeout: float = 150.0) -> list[int]:
    """Poll /ping until 200, opening the model load's ``gate`` after the first answer; return every status seen
    (connection refused is not a status)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:  # SageMaker's ping timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, "the server exited"
            try:
                status = client.get(f"{base}/ping").status_code
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            seen.append(status)
            gate.touch()
            if status == 200:
                return seen
            time.sleep(0.02)
    pytest.fail(f"/ping never answered 200; saw {sorted(set(seen))}")


def test_sagemaker_contract(server, tf_classifier, tmp_path):
    process, base, log_path = server
    seen = _wait_for_ping(base, process, tmp_path / "gate")
    assert seen[0] == 503, "/ping must say 503 while the model loads"
    assert set(seen[:-1]) == {503} and seen[-1] == 200
    assert (tmp_path / "gate.passed").exists(), "the model load did not go through the test's gate"
    ready = httpx.get(timeout=60, url=f"{base}/ping").json()
    assert ready["status"] == "ready"
    model = ready["model"]
    tolerance = TOLERANCE[model["precision"]]

    data = images.jpeg(70, size=128, cls=0)
    response = httpx.post(timeout=60, url=f"{base}/invocations", content=data, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    reference = tf_classifier.predict(preprocess(data, CONFIG)[None])
    assert np.abs(np.array(response.json()["predictions"]) - reference).max() <= tolerance

    batch = np.stack([images.mri_slice(seed, size=64, cls=seed % 4) for seed in range(71, 75)])
    response = httpx.post(
        f"{base}/invocations",
        json={"instances": batch.tolist()},
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    reference = tf_classifier.predict(np.stack([to_model_input(image, CONFIG) for image in batch]))
    got = np.array(response.json()["predictions"])
    assert np.array_equal(np.argmax(got, axis=1), np.argmax(reference, axis=1))
    assert np.abs(got - reference).max() <= tolerance

    response = httpx.post(timeout=60, url=f"{base}/predict", files={"file": ("scan.jpg", data, "image/jpeg")})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "glioma"

    # SIGTERM while a request is in flight (half its body sent): it is answered, then the process exits 0.
    port = int(base.rsplit(":", 1)[1])
    sock = start_upload(port, data, len(data) // 2)
    deadline = time.monotonic() + 30
    while inflight_requests(base) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert inflight_requests(base) == 1, "the half-sent request is not in flight"
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # the server is now draining; the rest of the body arrives after the signal
    sock.sendall(data[len(data) // 2 :])
    answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200") and b'"predictions"' in answer, answer[:300]
    assert process.wait(60) == 0, log_path.read_text()
    log = log_path.read_text()
    assert "Shutting down" in log
    assert "scan.jpg" not in log
