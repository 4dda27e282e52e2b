"""The web page in a real browser (Debian's Chromium through Playwright) against a real ``mri-classifier serve``.

Upload an MRI-like image with the heatmap off (the page asks ``/predict`` only), check the numbers shown
equal ``/predict``'s answer, toggle the heatmap with the keyboard (now, and only now, ``/explain``), upload a
DICOM (shown as the server's preprocessed image once the heatmap is on; its DICOM results are offered as two
files), a colour image (the warning lists the answer's reasons) and a bad file (the service's reason is
shown). The screenshot is saved in the test's temporary folder and, when ``MRI_SCREENSHOT_DIR`` is set, there
too. A missing Chromium fails the test: it is
never skipped silently.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage, generate_uid

from service.labels import CLASSES
from tests.service import web
from tests.service.images import make_dicom
from tests.synthetic import jpeg_bytes, mri_like

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PATIENT = "Doe^Jane"


@pytest.fixture(scope="module")
def browser():
    if not web.CHROMIUM.is_file():
        pytest.fail(web.MISSING_CHROMIUM, pytrace=False)
    with web.chromium() as instance:
        yield instance


def test_page_in_a_real_browser(model_root: Path, tmp_path: Path, browser) -> None:
    scan = jpeg_bytes(mri_like(0, np.random.default_rng(3), 128))
    log_path = tmp_path / "serve.log"
    with web.serve(model_root, log_path) as base:
        expected = httpx.post(f"{base}/predict", files={"file": ("scan.jpg", scan, "image/jpeg")}, timeout=60).json()
        explained = httpx.post(f"{base}/explain", files={"file": ("scan.jpg", scan, "image/jpeg")}, timeout=60).json()
        prediction = expected["predictions"][0]

        page = browser.new_page(viewport={"width": 1200, "height": 860})
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/")
        assert "Not a diagnosis" in page.inner_text("#notice")
        page.wait_for_selector("#model-info:has-text('mri-classifier version 1')")
        assert not page.is_checked("#heatmap-toggle")

        # keyboard: the file chooser takes the focus
        page.focus("#file-input")
        assert page.evaluate("document.activeElement.id") == "file-input"
        web.upload(page, "scan.jpg", scan, "image/jpeg")
        page.wait_for_selector("#result:not([hidden]) .bar-row")
        page.wait_for_timeout(300)  # a stray /explain would have started by now
        posted = [url.removeprefix(base) for url in requests if url.startswith(base) and "/static/" not in url]
        assert "/predict" in posted and not any(url.startswith("/explain") for url in posted), posted
        assert page.get_attribute("#preview", "src").startswith("blob:")  # the file itself, until a heatmap
        assert page.is_hidden("#explain-line")

        rows = page.query_selector_all("#bars .bar-row")
        assert [row.get_attribute("data-class") for row in rows] == list(CLASSES)
        for row in rows:
            name = row.get_attribute("data-class")
            value = row.query_selector(".bar-value")
            probability = prediction["probabilities"][name]
            assert float(value.get_attribute("data-probability")) == probability
            assert value.inner_text() == f"{probability * 100:.1f} %"
            assert row.query_selector("[role=progressbar]").get_attribute("aria-valuenow") == f"{probability * 100:.1f}"
        assert page.get_attribute("#predicted-class", "data-class") == prediction["label"]
        assert page.inner_text("#result-model") == "mri-classifier version 1"
        assert page.get_attribute("#status", "aria-live") == "polite"

        # the heatmap toggle, with the keyboard: the page asks /explain now
        image_src = f"data:image/png;base64,{explained['explanation']['image_png']}"
        overlay_src = f"data:image/png;base64,{explained['explanation']['overlay_png']}"
        page.focus("#heatmap-toggle")
        with page.expect_request(lambda request: request.url == f"{base}/explain"):
            page.keyboard.press("Space")
        assert page.is_checked("#heatmap-toggle")
        page.wait_for_selector("#explain-line:not([hidden])")
        assert page.get_attribute("#preview", "src") == overlay_src
        _save_screenshot(page, tmp_path)
        page.keyboard.press("Space")
        assert page.get_attribute("#preview", "src") == image_src

        assert page.is_hidden("#dicom-results")  # a JPEG has no study to file DICOM results in

        # DICOM: a placeholder while the heatmap is off, then the preprocessed image the server returns
        study = generate_uid()
        tags = {"StudyInstanceUID": study, "SeriesInstanceUID": generate_uid()}
        dicom = make_dicom(mri_like(3, np.random.default_rng(4), 64)[:, :, 0], bits=8, patient=PATIENT, tags=tags)
        web.upload(page, "slice.dcm", dicom, "application/dicom")
        page.wait_for_selector("#result:not([hidden]) .bar-row")
        assert page.is_hidden("#preview") and "DICOM" in page.inner_text("#preview-placeholder")
        page.check("#heatmap-toggle")
        page.wait_for_selector("#explain-line:not([hidden])")
        page.uncheck("#heatmap-toggle")
        src = page.get_attribute("#preview", "src") or ""
        assert src.startswith("data:image/png;base64,")
        assert len(base64.b64decode(src.split(",", 1)[1])) > 0

        # ...and offers its DICOM results: a structured report and the Grad-CAM secondary capture, as files
        page.click("#download-dicom")
        page.wait_for_selector("#dicom-links li:nth-child(2) a")
        links = page.query_selector_all("#dicom-links a")
        assert [link.get_attribute("download") for link in links] == [
            "structured-report.dcm",
            "gradcam-secondary-capture.dcm",
        ]
        saved = []
        for link in links:
            with page.expect_download() as download:
                link.click()
            saved.append(Path(download.value.path()).read_bytes())
        report, capture = (pydicom.dcmread(io.BytesIO(data)) for data in saved)
        assert (report.SOPClassUID, capture.SOPClassUID) == (ComprehensiveSRStorage, SecondaryCaptureImageStorage)
        assert report.StudyInstanceUID == capture.StudyInstanceUID == study

        # a colour image: the warning names every reason of the answer's check
        tinted = mri_like(1, np.random.default_rng(6), 128)
        tinted[..., 0] = 230
        colour = jpeg_bytes(tinted)
        check = httpx.post(f"{base}/predict", files={"file": ("c.jpg", colour, "image/jpeg")}, timeout=60).json()
        check = check["predictions"][0]["check"]
        assert check["warning"] and "colour_image" in check["reasons"]
        web.upload(page, "colour.jpg", colour, "image/jpeg")
        page.wait_for_selector("#warning:not([hidden]) #warning-reasons li")
        shown = [item.get_attribute("data-reason") for item in page.query_selector_all("#warning-reasons li")]
        assert shown == check["reasons"]
        assert "MRI slices are grayscale" in page.inner_text("#warning")

        # a bad file: the service's reason is shown
        web.upload(page, "notes.txt", b"patient notes, not an image", "text/plain")
        page.wait_for_selector("#error:not([hidden])")
        message = page.inner_text("#error")
        assert "415" in message and "not a JPEG, PNG or DICOM image" in message
        assert page.is_hidden("#result")

        assert not errors, errors
        assert all(url.startswith((base, "data:", "blob:")) for url in requests), "the page loaded something external"
        page.close()
    log = log_path.read_text()
    assert "Doe" not in log and "MRN-0042" not in log and "scan.jpg" not in log and "slice.dcm" not in log


def _save_screenshot(page, tmp_path: Path) -> None:
    path = tmp_path / "web-page.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    target = os.environ.get("MRI_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / "web-page.png")
