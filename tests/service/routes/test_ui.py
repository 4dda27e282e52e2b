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
    for path in ("/", "/static/app.js", "/static/style.css"):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", client.get(path).text, re.IGNORECASE), path


def test_the_page_is_not_in_the_openapi_schema(client):
    assert "/" not in client.get("/openapi.json").json()["paths"]
