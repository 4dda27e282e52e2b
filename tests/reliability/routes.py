"""The service's one list of routes (``service.http.routes.rules``) as the cross-cutting tests use it: concrete
paths, and how to send an image file or a JSON pixel batch to each inference route in the format it reads.

A route added to the service's list joins the security, limits, bad-input, privacy and live body-limit tests
through the helpers here; ``test_routes`` fails for an app route that is not in the list.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from service.http.routes.rules import Body, Kind, Route, of_kind
from service.http.routes.ui import PAGE_PATHS
from service.labels import CLASSES
from tests.service.conftest import MODEL_NAME

VERSION = "1"  # the tiny model's version
Request = tuple[str, str, dict[str, Any]]  # (method, path, keyword arguments of client.request)


def path_of(route: Route) -> str:
    """A concrete path of ``route``: the served model and version; a listed file for a page template."""
    if route.kind is Kind.PAGE and "{" in route.path:
        prefix = route.path.split("{")[0]
        return min(path for path in PAGE_PATHS if path.startswith(prefix))
    return route.path.format(name=MODEL_NAME, version=VERSION)


def paths(*kinds: Kind) -> list[str]:
    return [path_of(route) for route in of_kind(*kinds)]


#: Probes and the metrics scrape: never refused, open unless configured otherwise.
PROBES = paths(Kind.PROBE)
#: Everything that needs the key when one is set, as (method, path).
PROTECTED = [(route.method, path_of(route)) for route in of_kind(Kind.STATUS, Kind.INFERENCE)]
INFERENCE = of_kind(Kind.INFERENCE)
#: Inference routes that read a JSON body, and its format.
JSON_BODIES = (Body.TFSERVING_JSON, Body.OIP)
JSON_ROUTES = [(path_of(route), body) for route in INFERENCE for body in JSON_BODIES if body in route.bodies]


def route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def file_request(route: Route, data: bytes, filename: str = "scan.jpg", content_type: str = "image/jpeg") -> Request:
    """One image file sent the way ``route`` takes files: a multipart upload, a raw body, a TF Serving b64
    instance or an Open Inference Protocol ``image_files`` BYTES input."""
    path = path_of(route)
    if Body.MULTIPART in route.bodies:
        return "POST", path, {"files": {"file": (filename, data, content_type)}}
    if Body.IMAGE in route.bodies:
        return "POST", path, {"content": data, "headers": {"Content-Type": content_type}}
    if Body.TFSERVING_JSON in route.bodies:
        return "POST", path, {"json": {"instances": [{"b64": b64(data)}]}}
    if Body.OIP in route.bodies:
        tensor = {"name": "image_files", "datatype": "BYTES", "shape": [1], "data": [b64(data)]}
        return "POST", path, {"json": {"inputs": [tensor]}}
    raise AssertionError(f"no way to send a file to {route_id(route)}")


def probabilities(answer: dict[str, Any]) -> list[list[float]]:
    """The probability rows of any inference route's JSON answer (class order of ``service.labels``)."""
    if "predictions" in answer and answer["predictions"] and isinstance(answer["predictions"][0], dict):
        return [[p["probabilities"][c] for c in CLASSES] for p in answer["predictions"]]  # /predict
    if "prediction" in answer:  # /explain
        return [[answer["prediction"]["probabilities"][c] for c in CLASSES]]
    if "outputs" in answer and isinstance(answer["outputs"], list):  # the Open Inference Protocol
        output = next(o for o in answer["outputs"] if o["name"] == "probabilities")
        return np.reshape(output["data"], output["shape"]).tolist()
    return list(answer["predictions"])  # TF Serving, SageMaker


def json_pixels(body: Body, batch: np.ndarray) -> bytes:
    """A batch of pixel arrays [N, H, W, 3] as the JSON body of ``body``'s format (nested lists)."""
    if body is Body.TFSERVING_JSON:
        payload: dict[str, Any] = {"instances": batch.tolist()}
    elif body is Body.OIP:
        tensor = {"name": "images", "datatype": "UINT8", "shape": list(batch.shape), "data": batch.tolist()}
        payload = {"inputs": [tensor]}
    else:
        raise AssertionError(f"no JSON pixel format for {body}")
    return json.dumps(payload, separators=(",", ":")).encode()
