"""Time from the last slice of a series received by the node to its results stored in Orthanc (docs/dicom-node.md).

    nice .venv/bin/python -m tests.dicom_node.measure --model-dir models/mri-classifier --slices 24

Starts Orthanc (as the tests do) and the node in this process with the given model, uploads a generated MR series
to Orthanc and has Orthanc C-STORE it to the node, once per delivery path (C-STORE back, then STOW-RS). The clock
starts when the node has admitted the last slice and stops when Orthanc lists every SR of the series (then the
summary SR, which waits for the series to be quiet for ``--quiet`` seconds on top).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom

from service.config import DicomNodeSettings, Settings
from service.dicom_node.node import DicomNode
from tests.dicom_node.conftest import NODE_AET, PACS_AET, Orthanc, mr_series
from tests.processes import free_port


def _once(
    pacs: Orthanc, settings: Settings, destination: dict[str, Any], slices: int, quiet: float
) -> dict[str, float]:
    node = DicomNode(
        settings,
        DicomNodeSettings(  # type: ignore[call-arg]
            _env_file=None,
            port=free_port(),
            http_port=0,
            allowed_aets=[PACS_AET],
            series_quiet_s=quiet,
            max_pending=settings.max_queue_size,
            **destination,
        ),
    )
    node.start()
    admitted: list[float] = []
    admit = node.admit

    def timed(data: bytes) -> None:
        admit(data)
        admitted.append(time.monotonic())

    node.scp._admit = timed
    try:
        series = mr_series(slices, seed=1000)
        for data in series:
            pacs.upload(data)
        study = str(pydicom.dcmread(io.BytesIO(series[0]), stop_before_pixels=True).StudyInstanceUID)
        series_id = pacs.upload(series[0])["ParentSeries"]
        pacs.add_modality("node", NODE_AET, node.scp.address[1])
        started = time.monotonic()
        answer = pacs.rest.post("/modalities/node/store", json={"Resources": [series_id], "Synchronous": True})
        assert answer.status_code == 200, answer.text
        while pacs.count(study) < 2 * slices:
            time.sleep(0.01)
        reports = time.monotonic()
        while pacs.count(study) < 2 * slices + 1:
            time.sleep(0.01)
        summary = time.monotonic()
        assert len(admitted) == slices
        return {
            "send_s": admitted[-1] - started,
            "last_slice_to_srs_s": reports - admitted[-1],
            "last_slice_to_summary_s": summary - admitted[-1],
        }
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("models/mri-classifier"))
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--quiet", type=float, default=2.0)
    args = parser.parse_args()
    settings = Settings(_env_file=None, model_dir=args.model_dir, runtime=args.runtime)  # type: ignore[call-arg]
    with tempfile.TemporaryDirectory() as folder:
        pacs = Orthanc(free_port(), free_port(), Path(folder)).start()
        try:
            paths = {
                "c-store": {"store_ae_title": PACS_AET, "store_host": "127.0.0.1", "store_port": pacs.dicom_port},
                "stow-rs": {"stow_url": pacs.dicomweb},
            }
            for name, destination in paths.items():
                timings = _once(pacs, settings, destination, args.slices, args.quiet)
                print(name, {key: round(value, 3) for key, value in timings.items()})
        finally:
            pacs.stop()


if __name__ == "__main__":
    main()
