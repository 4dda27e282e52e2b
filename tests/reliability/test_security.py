"""Authentication (API key or bearer token, constant-time), open probe and metrics routes, CORS off unless
configured, and limits on by default."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.config import Settings
from service.http import auth
from service.http.routes.rules import Kind, of_kind
from service.inference.classifier import Classifier
from tests.reliability import payloads, routes
from tests.service.conftest import make_settings

KEY = "k3y-0123456789abcdef-secret"
OLD_KEY = "old-0123456789abcdef-secret"
#: Every status and inference route of the service's list, and a path that is not a route.
PROTECTED = [*routes.PROTECTED, ("GET", "/no-such-route")]
DOCS = sorted({*routes.paths(Kind.PAGE), "/docs/swagger-ui.css", "/static/docs.js"})
PROBES = routes.PROBES


@pytest.fixture
def start(model_root: Path, tf_classifier: Classifier) -> Iterator[Callable[..., TestClient]]:
    """``start(**settings)``: a client of the app on the loaded tiny model with those settings."""
    clients: list[TestClient] = []

    def _start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(model_root, **overrides), tf_classifier))
        clients.append(client.__enter__())
        return client

    yield _start
    for client in clients:
        client.__exit__(None, None, None)


def upload(client: TestClient, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/invocations", content=payloads.good_jpeg(), headers={"Content-Type": "image/jpeg", **(headers or {})}
    )


def test_auth_is_off_by_default(start: Callable[..., TestClient]) -> None:
    assert Settings(_env_file=None).api_key is None  # type: ignore[call-arg]
    assert upload(start()).status_code == 200


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_without_credentials_every_other_route_is_401(start: Callable[..., TestClient], method: str, path: str):
    client = start(api_key=KEY)
    response = client.request(method, path, content=payloads.good_jpeg(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="mri-classifier"'
    assert response.json() == {
        "error": "authentication required: send the API key in X-API-Key or Authorization: Bearer"
    }


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "wrong-0123456789abcdef"},
        {"X-API-Key": KEY[:-1]},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": ""},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {KEY.upper()}"},
        {"X-Api-Key": "nope", "Authorization": f"Bearer {KEY}"},  # X-API-Key wins when both are sent
    ],
    ids=["wrong", "prefix", "longer", "empty", "basic", "no token", "case", "both"],
)
def test_wrong_credentials_are_401(start: Callable[..., TestClient], headers: dict[str, str]) -> None:
    response = upload(start(api_key=KEY), headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="mri-classifier"')
    assert KEY not in response.text


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer  {KEY} "}],
    ids=["x-api-key", "bearer", "bearer, lower case"],
)
def test_the_key_opens_every_route(start: Callable[..., TestClient], headers: dict[str, str]) -> None:
    client = start(api_key=KEY)
    assert upload(client, headers).status_code == 200
    for route in of_kind(Kind.STATUS):
        assert client.get(routes.path_of(route), headers=headers).status_code == 200, route
    for route in routes.INFERENCE:
        method, path, kwargs = routes.file_request(route, payloads.good_jpeg())
        kwargs["headers"] = {**kwargs.get("headers", {}), **headers}
        response = client.request(method, path, **kwargs)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("path", DOCS)
def test_the_api_docs_open_without_a_key(start: Callable[..., TestClient], path: str) -> None:
    """They hold no data; a browser cannot send a key to open them."""
    assert start(api_key=KEY).get(path).status_code == 200


def test_the_openapi_document_declares_the_key_for_swagger_ui(start: Callable[..., TestClient]) -> None:
    schema = start(api_key=KEY).get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["APIKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"] == {"type": "http", "scheme": "bearer"}
    assert schema["security"] == [{"APIKey": []}, {"Bearer": []}]
    assert schema["paths"]["/readyz"]["get"]["security"] == [], "probes stay open"
    assert "security" not in schema["paths"]["/predict"]["post"], "the API needs the key (global requirement)"
    assert "securitySchemes" not in start().get("/openapi.json").json().get("components", {}), "no key, no scheme"


def test_the_previous_key_is_accepted_during_a_rotation(start: Callable[..., TestClient]) -> None:
    client = start(api_key=KEY, api_key_previous=OLD_KEY)
    assert upload(client, {"X-API-Key": KEY}).status_code == 200
    assert upload(client, {"X-API-Key": OLD_KEY}).status_code == 200
    assert upload(client, {"X-API-Key": "neither-0123456789abcdef"}).status_code == 401


def test_every_key_is_compared_in_constant_time(
    start: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hmac.compare_digest`` on equal-length digests, for every configured key, match or not."""
    calls: list[tuple[int, int]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    client = start(api_key=KEY, api_key_previous=OLD_KEY)
    for presented in (KEY, OLD_KEY, "x" * 40):
        calls.clear()
        upload(client, {"X-API-Key": presented})
        assert calls == [(32, 32), (32, 32)]


def test_probes_and_metrics_stay_open_by_default(start: Callable[..., TestClient]) -> None:
    client = start(api_key=KEY)
    for path in [*PROBES, "/metrics"]:
        assert client.get(path).status_code == 200, path


def test_probes_and_metrics_can_be_closed(start: Callable[..., TestClient]) -> None:
    client = start(api_key=KEY, auth_exempt_health=False, auth_exempt_metrics=False)
    for path in [*PROBES, "/metrics"]:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"X-API-Key": KEY}).status_code == 200, path
    client = start(api_key=KEY, auth_exempt_metrics=False)
    assert client.get("/ping").status_code == 200 and client.get("/metrics").status_code == 401


def test_the_web_page_loads_without_a_key_but_the_api_does_not(start: Callable[..., TestClient]) -> None:
    client = start(api_key=KEY)
    for path in ("/", "/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/static/other.js").status_code == 401
    assert client.post("/predict").status_code == 401


def test_the_key_never_reaches_the_log(start: Callable[..., TestClient], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = start(api_key=KEY)
    upload(client, {"X-API-Key": "wrong-0123456789abcdef"})
    upload(client, {"X-API-Key": KEY})
    assert "refused a POST request: invalid credentials" in caplog.text
    assert KEY not in caplog.text and "wrong-0123456789abcdef" not in caplog.text


def test_keys_must_be_long_and_are_never_shown() -> None:
    with pytest.raises(ValidationError) as error:
        Settings(_env_file=None, api_key="short-key")  # type: ignore[call-arg,arg-type]
    assert "short-key" not in str(error.value)
    settings = Settings(_env_file=None, api_key=f"  {KEY}\n")  # type: ignore[call-arg,arg-type]
    assert settings.api_key is not None and settings.api_key.get_secret_value() == KEY  # a Secret file's newline
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


def test_api_key_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRI_API_KEY", KEY)
    monkeypatch.setenv("MRI_API_KEY_PREVIOUS", OLD_KEY)
    monkeypatch.setenv("MRI_AUTH_EXEMPT_METRICS", "false")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.api_key is not None and settings.api_key.get_secret_value() == KEY
    assert settings.api_key_previous is not None and settings.api_key_previous.get_secret_value() == OLD_KEY
    assert settings.auth_exempt_metrics is False and settings.auth_exempt_health is True


# -------------------------------------------------------------------------------------------------- CORS

ORIGIN = "https://viewer.example"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}


def test_cors_is_off_by_default(start: Callable[..., TestClient]) -> None:
    client = start()
    assert "access-control-allow-origin" not in client.options("/predict", headers=PREFLIGHT).headers
    assert "access-control-allow-origin" not in upload(client, {"Origin": ORIGIN}).headers


def test_cors_allows_only_the_configured_origins(start: Callable[..., TestClient]) -> None:
    client = start(cors_origins=[ORIGIN], api_key=KEY)
    preflight = client.options("/predict", headers=PREFLIGHT)  # answered before authentication
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    refused = upload(client, {"Origin": ORIGIN})  # a 401 a browser can read
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    assert upload(client, {"Origin": ORIGIN, "X-API-Key": KEY}).headers["access-control-allow-origin"] == ORIGIN
    other = client.options("/predict", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


def test_cors_origins_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRI_CORS_ORIGINS", f"{ORIGIN}, https://other.example")
    assert Settings(_env_file=None).cors_origins == [ORIGIN, "https://other.example"]  # type: ignore[call-arg]


# --------------------------------------------------------------------------------------- limits by default


def test_limits_are_on_by_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.max_pixels == 4096 * 4096
    assert settings.max_images_per_request == 16
    assert settings.max_concurrent_requests == 64
    assert settings.max_concurrent_decodes == 2
    assert settings.max_queue_size == 64
    assert settings.body_timeout_s == 30 and settings.request_timeout_s == 60
    assert settings.cors_origins == [] and settings.api_key is None
