"""HTTP checks of a running service container, from the host (standard library only; used by image-test.sh).

python3 image_checks.py wait   http://127.0.0.1:8080 240          until /ping answers 200
python3 image_checks.py routes http://127.0.0.1:8080 sample.jpg   /ping /healthz /readyz /invocations
                                                                   /predict /metrics
python3 image_checks.py prometheus http://127.0.0.1:9090 mri_model_ready 120
                                                                   until Prometheus has scraped it
python3 image_checks.py source http://127.0.0.1:8080 built-in /opt/mri-classifier/model
                                                                   /readyz serves that model source
python3 image_checks.py failed http://127.0.0.1:8080 configured /opt/ml/model 240
                                                                   /readyz reports that source failed
python3 image_checks.py runtime http://127.0.0.1:8080 openvino "no NVIDIA GPU visible"
                                                                   /readyz serves on that runtime, for that reason
python3 image_checks.py version http://127.0.0.1:8080 1           /readyz and TF Serving's status report
                                                                   that version (its folder's number)
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")  # the model's output order


def say(text: str) -> None:
    """One line of the test log."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait(base: str, timeout_s: float) -> int:
    """Poll ``/ping`` until 200 (SageMaker allows 4 minutes); print how long it took."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout_s:
        try:
            status, body = request(base + "/ping")
            if status == 200:
                say(f"ready: /ping 200 after {time.monotonic() - start:.1f} s")
                return 0
            last = f"{status} {body[:200]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(1)
    say(f"FAIL: /ping not 200 after {timeout_s:.0f} s (last: {last})")
    return 1


def _check_prediction(name: str, status: int, body: bytes) -> list[str]:
    """One image's answer: ``/predict``'s labelled form, or ``/invocations``' TF Serving form
    (``{"predictions": [[p_glioma, p_meningioma, p_no_tumor, p_pituitary]]}``)."""
    if status != 200:
        return [f"{name}: status {status}: {body[:300]!r}"]
    answer = json.loads(body)
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    first = predictions[0] if predictions else None
    if isinstance(first, list) and len(first) == len(CLASSES):
        probabilities = dict(zip(CLASSES, first, strict=True))
    elif isinstance(first, dict) and first.get("label") in CLASSES:
        probabilities = first.get("probabilities", {})
    else:
        return [f"{name}: neither labelled nor TF Serving predictions in {answer!r}"[:400]]
    if set(probabilities) != set(CLASSES) or abs(sum(probabilities.values()) - 1) > 1e-3:
        return [f"{name}: probabilities {probabilities!r} are not the four classes summing to 1"]
    best = max(probabilities, key=lambda c: probabilities[c])
    say(f"{name}: 200 {best} {probabilities[best]:.3f}")
    return []


def routes(base: str, jpeg: Path) -> int:
    """Every route the SageMaker contract and the operators need, with a real JPEG."""
    errors: list[str] = []
    for path in ("/ping", "/healthz", "/readyz"):
        status, body = request(base + path)
        say(f"{path}: {status} {body[:120]!r}")
        if status != 200:
            errors.append(f"{path}: {status}")
    image = jpeg.read_bytes()
    status, body = request(base + "/invocations", image, {"Content-Type": "image/jpeg", "Accept": "application/json"})
    errors += _check_prediction("/invocations", status, body)
    boundary = uuid.uuid4().hex
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="scan.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, body = request(base + "/predict", multipart, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    errors += _check_prediction("/predict", status, body)
    status, body = request(base + "/metrics")
    text = body.decode("utf-8", "replace")
    for metric in (
        "mri_requests_total",
        "mri_request_duration_seconds_bucket",
        "mri_predictions_total",
        "mri_batch_size_bucket",
        "mri_model_ready 1.0",
    ):
        if metric not in text:
            errors.append(f"/metrics: {metric} missing")
    say(f"/metrics: {status}, {len(text.splitlines())} lines")
    for error in errors:
        say(f"FAIL: {error}")
    return 1 if errors else 0


def prometheus(base: str, metric: str, timeout_s: float) -> int:
    """Query Prometheus until ``metric`` has a sample scraped from the service."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout_s:
        try:
            status, body = request(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": metric}))
            result = json.loads(body).get("data", {}).get("result", []) if status == 200 else []
            if result:
                say(f"prometheus: {metric} = {result[0]['value'][1]} {result[0]['metric']}")
                return 0
            last = f"{status} {body[:200]!r}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(2)
    say(f"FAIL: Prometheus has no {metric} after {timeout_s:.0f} s (last: {last})")
    return 1


def source(base: str, origin: str, model_dir: str) -> int:
    """``/readyz`` is 200 and names the model's source (``service/inference/model_source.py``)."""
    status, body = request(base + "/readyz")
    answer = json.loads(body) if status in (200, 503) else {}
    found = answer.get("source")
    say(f"/readyz: {status}, source {found}, model {answer.get('model', {}).get('version')}")
    return 0 if status == 200 and found == {"origin": origin, "model_dir": model_dir} else 1


def failed(base: str, origin: str, model_dir: str, timeout_s: float) -> int:
    """``/readyz`` turns 503 ``failed`` for that source, and the service never becomes ready meanwhile."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            status, body = request(base + "/readyz")
        except (urllib.error.URLError, OSError):
            time.sleep(1)
            continue
        answer = json.loads(body)
        if status == 200:
            say(f"FAIL: ready with {answer.get('source')}")
            return 1
        if answer.get("status") == "failed":
            say(f"/readyz: 503 failed ({answer.get('reason')}), source {answer.get('source')}")
            return 0 if answer.get("source") == {"origin": origin, "model_dir": model_dir} else 1
        time.sleep(1)
    say(f"FAIL: /readyz never said failed within {timeout_s:.0f} s")
    return 1


def runtime(base: str, expected: str, why: str) -> int:
    """``/readyz`` is 200, serves on the ``expected`` runtime, and its ``runtime_reason`` contains ``why``."""
    status, body = request(base + "/readyz")
    model = json.loads(body).get("model") or {}
    say(f"/readyz: {status}, runtime {model.get('runtime')} on {model.get('device')}: {model.get('runtime_reason')}")
    return 0 if status == 200 and model.get("runtime") == expected and why in model.get("runtime_reason", "") else 1


def version(base: str, expected: str) -> int:
    """``/readyz`` and ``/v1/models/<name>`` report ``expected``, the number of the folder served from."""
    status, body = request(base + "/readyz")
    model = json.loads(body).get("model", {}) if status == 200 else {}
    found = [str(model.get("version"))]
    status, body = request(f"{base}/v1/models/{model.get('name', 'mri-classifier')}")
    if status == 200:
        found += [s["version"] for s in json.loads(body)["model_version_status"]]
    say(f"versions reported: {found} (folder {expected})")
    return 0 if found == [expected, expected] else 1


def main(argv: list[str]) -> int:
    """Dispatch to one check."""
    command, base, *rest = argv
    if command == "wait":
        return wait(base, float(rest[0]) if rest else 240)
    if command == "routes":
        return routes(base, Path(rest[0]))
    if command == "prometheus":
        return prometheus(base, rest[0], float(rest[1]) if len(rest) > 1 else 120)
    if command == "source":
        return source(base, rest[0], rest[1])
    if command == "runtime":
        return runtime(base, rest[0], rest[1])
    if command == "failed":
        return failed(base, rest[0], rest[1], float(rest[2]) if len(rest) > 2 else 240)
    if command == "version":
        return version(base, rest[0])
    raise SystemExit(f"unknown check {command!r}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
