"""The web page's files: served at / and /static/<name> only, with a CSP, and nothing loaded from outside."""

from __future__ import annotations

import re

import pytest


def test_index_and_assets(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "Not a diagnosis" in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert f"/static/{name}" in page.text


@pytest.mark.parametrize("path", ["/static/missing.js", "/static/..%2Fapp.py", "/static/index.htm"])
def test_only_listed_files(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"].lower() == "not found"


def test_nothing_external(client):
    """Air-gapped: no absolute URL to another host in the page or its assets."""
    for path in ("/", "/static/app.js", "/static/style.css", "/docs", "/static/docs.js"):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", client.get(path).text, re.IGNORECASE), path


def test_the_page_is_not_in_the_openapi_schema(client):
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_api_docs_are_served_offline(client):
    """/docs is Swagger UI from package data: its HTML loads only the service's own files, no inline script."""
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "unsafe-inline" not in csp
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources == ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/static/docs.js"]
    assert "<script>" not in page.text, "an inline script would need 'unsafe-inline'"
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text and len(bundle.content) > 500_000
    assert client.get("/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert "/openapi.json" in client.get("/static/docs.js").text
    for traversal in ("/docs/..%2Fstatic%2Fapp.js", "/docs/%2E%2E/static/app.js", "/docs/%2E%2E"):
        assert b"/docs/" in client.build_request("GET", traversal).url.raw_path, "sent as is, not normalised"
        answer = client.get(traversal)
        assert answer.status_code == 404 and answer.json()["error"].lower() == "not found", traversal
    for unlisted in ("/docs/favicon.png", "/docs/app.js", "/docs/docs.html"):  # only the listed files
        assert client.get(unlisted).status_code == 404, unlisted
