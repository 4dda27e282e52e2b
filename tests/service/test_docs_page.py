"""``/docs`` in a real browser (Debian's Chromium through Playwright), air-gapped and with an API key set: the
page opens without the key, Swagger UI renders from the service's own files under its CSP, and a call made from
the page after Authorize carries the key the user typed. A missing Chromium fails the test (never skipped)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service import web
from tests.service.conftest import MODEL_NAME

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KEY = "docs-0123456789abcdef-key"


def test_docs_work_offline_with_an_api_key(model_root: Path, tmp_path: Path) -> None:
    if not web.CHROMIUM.is_file():
        pytest.fail(web.MISSING_CHROMIUM, pytrace=False)
    with (
        web.serve(model_root, tmp_path / "serve.log", settings={"MRI_API_KEY": KEY}) as base,
        web.chromium() as browser,
    ):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        outside: list[str] = []
        sent: dict[str, dict[str, str]] = {}

        def route(request_route: object) -> None:
            request = request_route.request  # type: ignore[attr-defined]
            if request.url.startswith(base):
                sent[request.url] = request.headers
                request_route.continue_()  # type: ignore[attr-defined]
            else:  # air-gapped: anything else fails, and is recorded
                outside.append(request.url)
                request_route.abort()  # type: ignore[attr-defined]

        page.route("**/*", route)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(f"{base}/docs")
        page.wait_for_selector(".opblock-summary-path >> text=/predict", timeout=60_000)
        assert page.inner_text(".info .title").startswith("mri-classifier")

        page.click("button.authorize")
        page.fill(".auth-container input[type=text], .auth-container input[type=password]", KEY)
        page.click(".auth-container .auth-btn-wrapper button.authorize")
        page.click("button.btn-done")

        block = page.locator(".opblock-get", has=page.locator(".opblock-summary-path[data-path='/v1/models/{name}']"))
        block.locator(".opblock-summary").click()
        block.locator("button.try-out__btn").click()
        block.locator(".parameters input[placeholder='name']").fill(MODEL_NAME)
        block.locator("button.execute").click()
        live = block.locator(".live-responses-table tbody .response-col_status").first
        live.wait_for(timeout=30_000)
        status = live.inner_text().strip()
        assert status == "200", status

        call = sent[f"{base}/v1/models/{MODEL_NAME}"]
        assert call.get("x-api-key") == KEY or call.get("authorization") == f"Bearer {KEY}"
        assert outside == [], f"requests outside the service: {outside}"
        assert errors == []
        assert not [line for line in console if "Content Security Policy" in line or "Refused to" in line], console
