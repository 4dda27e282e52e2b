"""Helpers for the browser test: a real ``mri-classifier serve`` on a free loopback port, and Debian's Chromium
driven by Playwright. Also a small tool that takes docs/api.md's screenshot of the page with any model::

    .venv/bin/python -m tests.service.web --model-dir models/mri-classifier --image scan.jpg --out docs/screenshot.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.processes import free_port, serve_command, stop_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
MISSING_CHROMIUM = (
    f"Chromium is not installed at {CHROMIUM}: the web page test needs Debian's package "
    "(apt-get install -y chromium); Playwright's own browser download is not used."
)


@contextmanager
def serve(
    model_dir: Path,
    log_path: Path,
    runtime: str = "tensorflow",
    timeout: float = 180.0,
    settings: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``mri-classifier serve`` on 127.0.0.1 and a free port until the model is ready; yields the base URL.
    ``settings``: extra ``MRI_*`` environment variables."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MRI_", "SAGEMAKER_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", MRI_LOG_LEVEL="debug", **(settings or {}))
    command = [*serve_command(), "serve", "--model-dir", str(Path(model_dir).resolve()), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--runtime", runtime]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    ready = client.get(f"{base}/readyz")
                    if ready.status_code == 200:
                        break
                    if ready.json().get("status") == "failed":
                        raise RuntimeError(f"the model did not load: {ready.json().get('reason')}")
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server was not ready in {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
        yield base
    finally:
        stop_process(process)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Debian's, at /usr/bin/chromium); raises when it is missing."""
    if not CHROMIUM.is_file():
        raise FileNotFoundError(MISSING_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def upload(page: Any, name: str, data: bytes, mime_type: str) -> None:
    """Choose a file in the page's file input, as a user would."""
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": mime_type, "buffer": data}])


def screenshot(model_dir: Path, image: Path, out: Path, runtime: str = "tensorflow", timeout: float = 600.0) -> None:
    """Serve ``model_dir``, upload ``image`` in the page, show the heatmap and save a screenshot to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.parent / ".screenshot-serve.log"
    try:
        with serve(model_dir, log_path, runtime, timeout) as base, chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.goto(f"{base}/")
            page.wait_for_selector("#model-info:has-text('version')")
            mime_type = "application/dicom" if image.suffix.lower() in (".dcm", ".dicom") else "image/jpeg"
            upload(page, image.name, image.read_bytes(), mime_type)
            page.wait_for_selector("#result:not([hidden]) .bar-row", timeout=timeout * 1000)
            page.check("#heatmap-toggle")
            page.screenshot(path=str(out), full_page=True)
    finally:
        log_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot of the web page with a model and one image.")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshot.png"))
    parser.add_argument("--runtime", default="tensorflow")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the model to be ready")
    args = parser.parse_args(argv)
    screenshot(args.model_dir, args.image, args.out, args.runtime, args.timeout)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
