"""``mri-classifier fetch-model``: the init container of ``k8s/components/model-download``. Real archives and a
real tiny model, S3 from moto, HTTP from a local server; the fetched folder is then loaded by the service."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from service.classifier import Classifier
from service.fetch_model import FetchError, fetch
from tests.service.conftest import make_settings
from training.cli import main as cli_main

BUCKET = "models"


def model_tar(model_root: Path) -> bytes:
    """``model.tar.gz`` as ``mri-classifier sagemaker package`` writes it: ``1/saved_model.pb`` at the root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(model_root / "1", arcname="1")
    return buffer.getvalue()


@pytest.fixture
def s3(aws_env: None) -> Iterator[object]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _loads(folder: Path) -> None:
    classifier = Classifier(make_settings(folder))
    assert classifier.load(), classifier.reason
    assert classifier.model.info.version == 1


def test_s3_archive_is_unpacked_and_served(s3: object, model_root: Path, tmp_path: Path, capsys) -> None:
    s3.put_object(Bucket=BUCKET, Key="releases/2/model.tar.gz", Body=model_tar(model_root))  # type: ignore[attr-defined]
    dest = tmp_path / "opt-ml-model"
    assert cli_main(["fetch-model", f"s3://{BUCKET}/releases/2/model.tar.gz", str(dest)]) == 0
    assert "fetched" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["1"]
    _loads(dest)


def test_s3_prefix_is_copied(s3: object, model_root: Path, tmp_path: Path) -> None:
    for path in (model_root / "1").rglob("*"):
        if path.is_file():
            key = f"live/1/{path.relative_to(model_root / '1')}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())  # type: ignore[attr-defined]
    s3.put_object(Bucket=BUCKET, Key="live-other/x", Body=b"not under the prefix")  # type: ignore[attr-defined]
    dest = fetch(f"s3://{BUCKET}/live", tmp_path / "m")
    assert sorted(p.name for p in dest.iterdir()) == ["1"]
    _loads(dest)


def test_an_earlier_fetch_is_replaced_only_by_a_complete_model(s3: object, model_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "m"
    s3.put_object(Bucket=BUCKET, Key="a/model.tar.gz", Body=model_tar(model_root))  # type: ignore[attr-defined]
    fetch(f"s3://{BUCKET}/a/model.tar.gz", dest)
    s3.put_object(Bucket=BUCKET, Key="empty/readme.txt", Body=b"no model")  # type: ignore[attr-defined]
    with pytest.raises(FetchError, match=r"no saved_model\.pb"):
        fetch(f"s3://{BUCKET}/empty/", dest)
    assert sorted(p.name for p in dest.iterdir()) == ["1"], "the complete earlier model stays, no leftovers"
    _loads(dest)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (f"s3://{BUCKET}/missing/model.tar.gz", "S3:"),
        (f"s3://{BUCKET}/nothing-here/", "no objects under"),
        ("gs://bucket/model.tar.gz", "unsupported URI scheme"),
        ("/local/path", "unsupported URI scheme"),
    ],
)
def test_failures_exit_1_with_a_reason(s3: object, tmp_path: Path, capsys, uri: str, reason: str) -> None:
    assert cli_main(["fetch-model", uri, str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mri-classifier fetch-model: ") and reason in err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir()), "nothing half-fetched stays"


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("../escaped.txt", tarfile.REGTYPE, "leaves the destination"),
        ("/tmp/absolute.txt", tarfile.REGTYPE, "leaves the destination"),
        ("1/link", tarfile.SYMTYPE, "not a file or folder"),
        ("1/fifo", tarfile.FIFOTYPE, "not a file or folder"),
    ],
)
def test_an_archive_cannot_write_outside_the_folder(
    s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, kind: bytes, reason: str
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        info.size = 1 if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    s3.put_object(Bucket=BUCKET, Key="evil/model.tar.gz", Body=buffer.getvalue())  # type: ignore[attr-defined]
    # The checks hold without tarfile's data filter too (Debian 12's Python 3.11.2 has none).
    monkeypatch.delattr(tarfile, "data_filter")
    with pytest.raises(FetchError, match=reason):
        fetch(f"s3://{BUCKET}/evil/model.tar.gz", tmp_path / "m")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "m" / "1").exists()


def test_archives_unpack_without_the_data_filter(
    s3: object, model_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(tarfile, "data_filter")
    s3.put_object(Bucket=BUCKET, Key="ok/model.tar.gz", Body=model_tar(model_root))  # type: ignore[attr-defined]
    _loads(fetch(f"s3://{BUCKET}/ok/model.tar.gz", tmp_path / "m"))


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_http_archive(http_root: tuple[str, Path], model_root: Path, tmp_path: Path) -> None:
    base, root = http_root
    (root / "model.tar.gz").write_bytes(model_tar(model_root))
    _loads(fetch(f"{base}/model.tar.gz", tmp_path / "m"))
    with pytest.raises(FetchError, match=r"must be a \.tar\.gz"):
        fetch(f"{base}/model/", tmp_path / "n")
    with pytest.raises(FetchError, match="download failed"):
        fetch(f"{base}/missing.tar.gz", tmp_path / "o")
