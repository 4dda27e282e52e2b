"""Fixtures for the DICOM node: a real PACS (Debian's Orthanc with its DICOMweb plugin) started on loopback with
a temporary configuration, the node itself in this process with the tiny model of the service tests, and MR
series made by the tests."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from prometheus_client import REGISTRY
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from service.config import DicomNodeSettings
from service.dicom_node.node import DicomNode
from service.inference.classifier import Classifier
from tests.processes import free_port, stop_process
from tests.service import images
from tests.service.conftest import client, make_settings, open_client

__all__ = ["client", "open_client"]  # the service tests' fixtures (the tiny model is tests/conftest.py's)

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
MISSING_ORTHANC = (
    "Orthanc is not installed: the DICOM node tests need Debian's orthanc, orthanc-dicomweb and dcmtk "
    "(apt-get install orthanc orthanc-dicomweb dcmtk; `make dicom-tools` or .ci/run install them); never skipped."
)
PACS_AET = "ORTHANC"
NODE_AET = "MRICLASSIFIER"
SCU_AET = "TESTSCU"
PATIENT = {"name": "Doe^Jane", "id": "MRN-0042"}


@dataclass
class Orthanc:
    """One running Orthanc: its ports, REST client and log."""

    http_port: int
    dicom_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    aet: str = PACS_AET
    rest: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        # no keep-alive: Orthanc closes idle connections after a second, and a reused one can fail
        self.rest = httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}", timeout=60, limits=httpx.Limits(max_keepalive_connections=0)
        )

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def log(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")

    def start(self, timeout: float = 60.0) -> Orthanc:
        config = {
            "Name": "mri-classifier-tests",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomScuTimeout": 10,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "DicomModalities": {},
            "SaveJobs": False,
            "StorageCompression": False,
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        log = (self.folder / "orthanc.log").open("wb")
        assert ORTHANC is not None
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"Orthanc exited:\n{self.log[-3000:]}")
            try:
                if self.rest.get("/system").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"Orthanc did not start:\n{self.log[-3000:]}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace_s=20, kill_wait_s=5)
        self.rest.close()

    def add_modality(self, name: str, aet: str, port: int) -> None:
        answer = self.rest.put(f"/modalities/{name}", json={"AET": aet, "Host": "127.0.0.1", "Port": port})
        assert answer.status_code == 200, answer.text

    def upload(self, data: bytes) -> dict[str, Any]:
        answer = self.rest.post("/instances", content=data)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def study_id(self, study_uid: str) -> str | None:
        found = self.rest.post("/tools/lookup", content=study_uid).json()
        return next((item["ID"] for item in found if item["Type"] == "Study"), None)

    def study_objects(self, study_uid: str) -> list[bytes]:
        """Every instance of a study, as Part 10 bytes."""
        study = self.study_id(study_uid)
        if study is None:
            return []
        listed = self.rest.get(f"/studies/{study}/instances").json()
        return [self.rest.get(f"/instances/{item['ID']}/file").content for item in listed]

    def count(self, study_uid: str) -> int:
        study = self.study_id(study_uid)
        return 0 if study is None else len(self.rest.get(f"/studies/{study}/instances").json())


@pytest.fixture(scope="session")
def orthanc_binary() -> str:
    if ORTHANC is None or not DICOMWEB_PLUGIN.is_file():
        pytest.fail(MISSING_ORTHANC, pytrace=False)
    return ORTHANC


@pytest.fixture
def start_orthanc(orthanc_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Orthanc]]:
    """``start_orthanc(dicom_port=None)`` -> a running Orthanc (free ports, a temporary storage folder)."""
    started: list[Orthanc] = []

    def _start(dicom_port: int | None = None) -> Orthanc:
        pacs = Orthanc(free_port(), dicom_port or free_port(), tmp_path_factory.mktemp("orthanc"))
        started.append(pacs)
        return pacs.start()

    yield _start
    for pacs in started:
        pacs.stop()


@pytest.fixture
def orthanc(start_orthanc: Callable[..., Orthanc]) -> Orthanc:
    return start_orthanc()


@pytest.fixture
def start_node(model_root: Path, tf_classifier: Classifier) -> Iterator[Callable[..., DicomNode]]:
    """``start_node(classifier=None, **settings)`` -> a started node with the tiny model (stopped after)."""
    with ExitStack() as stack:

        def _start(classifier: Classifier | None = None, **overrides: Any) -> DicomNode:
            values: dict[str, Any] = {
                "port": free_port(),
                "http_port": 0,
                "allowed_aets": [PACS_AET, SCU_AET],
                "max_pending": 16,  # the test settings' MRI_MAX_QUEUE_SIZE
                "series_quiet_s": 1.0,
                "delivery_backoff_s": 0.05,
                "delivery_max_backoff_s": 0.5,
                "destination_check_interval_s": 0.5,
                **overrides,
            }
            node = DicomNode(
                make_settings(model_root, graceful_shutdown_s=10.0),
                DicomNodeSettings(_env_file=None, **values),  # type: ignore[call-arg]
                classifier or tf_classifier,
            )
            node.start()
            stack.callback(node.stop)
            return node

        yield _start


def mr_series(count: int, study_uid: str | None = None, seed: int = 0) -> list[bytes]:
    """``count`` MR slices (12-bit, classes in turn) of one new series in ``study_uid`` (default: a new study)."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    tags = {
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "StudyDate": "20260315",
        "StudyTime": "101500",
        "AccessionNumber": "ACC-7731",
        "StudyID": "S-42",
        "SeriesNumber": 3,
        "InstitutionName": "St-Elsewhere-Hospital",
    }
    return [
        images.make_dicom(
            images.mri_slice(seed + i, size=64, cls=i % 4)[:, :, 0].astype(np.uint16) * 16,
            bits=12,
            patient=PATIENT["name"],
            patient_id=PATIENT["id"],
            tags={**tags, "InstanceNumber": i + 1},
        )
        for i in range(count)
    ]


def study_uid_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)


def sample(name: str, **labels: str) -> float:
    """The value of one metric sample (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def associate(port: int, aet: str = SCU_AET, called: str = NODE_AET, tls: Any = None) -> Any:
    """An association from a pynetdicom SCU to the node (MR Image Storage and Verification proposed)."""
    from pynetdicom import AE

    ae = AE(ae_title=aet)
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls)


def store(port: int, slices: list[bytes], aet: str = SCU_AET) -> list[int]:
    """C-STORE ``slices`` over one association; their statuses."""
    assoc = associate(port, aet)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(io.BytesIO(data))).Status) for data in slices]
    finally:
        assoc.release()
