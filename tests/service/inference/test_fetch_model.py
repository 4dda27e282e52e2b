"""``mri-classifier fetch-model``: the init container of ``k8s/components/model-download``. Real archives and a
real tiny model, S3 from moto, HTTP and HTTPS (a self-signed certificate) from local servers on 127.0.0.1; the
fetched folder is then loaded by the service. Every path runs with and without tarfile's ``data`` filter where
it matters (Debian 12's Python 3.11.2 has none)."""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.server
import io
import ipaddress
import logging
import os
import ssl
import stat
import tarfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from service.inference.classifier import Classifier
from service.inference.fetch_model import MIB, FetchError, HttpsOnlyRedirects, Limits, fetch, redact
from tests.service.conftest import make_settings
from training.cli import main as cli_main

BUCKET = "models"
HTTP = Limits(allow_http=True)
SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
#: A presigned URL's query string (AWS's documented example values): none of it may be printed.
PRESIGNED = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1%2Fs3%2F"
    "aws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host"
    f"&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLETOKEN&X-Amz-Signature={SIGNATURE}"
)
USER, PASSWORD = "alice", "hunter2-s3cr3t"
SECRETS = ("AKIAIOSFODNN7EXAMPLE", "FQoGZXIvYXdzEXAMPLETOKEN", SIGNATURE, "X-Amz-", USER, PASSWORD)


def model_tar(model_root: Path) -> bytes:
    """``model.tar.gz`` as ``mri-classifier sagemaker package`` writes it: ``1/saved_model.pb`` at the root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(model_root / "1", arcname="1")
    return buffer.getvalue()


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_info(name: str, size: int, mode: int = 0o644, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type = size, mode, kind
    return info


@pytest.fixture(params=["data filter", "no data filter"])
def tar_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of extracting: with tarfile's ``data`` filter (3.11.4+) and without it (3.11.2)."""
    if request.param == "data filter" and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python (before 3.11.4) has no tarfile data filter; the other case covers it")
    if request.param == "no data filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _loads(folder: Path) -> None:
    classifier = Classifier(make_settings(folder))
    assert classifier.load(), classifier.reason
    assert classifier.model.info.version == 1


def _empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# --- S3 ---------------------------------------------------------------------------------------------------------


def test_s3_archive_is_unpacked_and_served(s3: Any, model_root: Path, tmp_path: Path, capsys) -> None:
    s3.put_object(Bucket=BUCKET, Key="releases/2/model.tar.gz", Body=model_tar(model_root))
    dest = tmp_path / "opt-ml-model"
    assert cli_main(["fetch-model", f"s3://{BUCKET}/releases/2/model.tar.gz", str(dest)]) == 0
    assert capsys.readouterr().out == f"fetched s3://{BUCKET}/releases/2/model.tar.gz into {dest}: 1\n"
    assert sorted(p.name for p in dest.iterdir()) == ["1"]
    _loads(dest)


def test_s3_prefix_is_copied(s3: Any, model_root: Path, tmp_path: Path) -> None:
    for path in (model_root / "1").rglob("*"):
        if path.is_file():
            key = f"live/1/{path.relative_to(model_root / '1')}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="live-other/x", Body=b"not under the prefix")
    dest = fetch(f"s3://{BUCKET}/live", tmp_path / "m")
    assert sorted(p.name for p in dest.iterdir()) == ["1"]
    _loads(dest)


def test_an_earlier_fetch_is_replaced_only_by_a_complete_model(s3: Any, model_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "m"
    s3.put_object(Bucket=BUCKET, Key="a/model.tar.gz", Body=model_tar(model_root))
    fetch(f"s3://{BUCKET}/a/model.tar.gz", dest)
    (dest / ".fetch-killed-earlier").mkdir()  # a fetch that was killed leaves its staging folder
    (dest / ".fetch-killed-earlier" / "big").write_bytes(b"x" * 1000)
    s3.put_object(Bucket=BUCKET, Key="empty/readme.txt", Body=b"no model")
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
        ("http://127.0.0.1:9/model.tar.gz", "refusing plain http:// (http://127.0.0.1:9/model.tar.gz)"),
        ("https://[::1/model.tar.gz", "not a valid URI"),
    ],
)
def test_failures_exit_1_with_a_reason(s3: Any, tmp_path: Path, capsys, uri: str, reason: str) -> None:
    assert cli_main(["fetch-model", uri, str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mri-classifier fetch-model: ") and reason in err and err.count("\n") == 1
    assert _empty(tmp_path / "m"), "nothing half-fetched stays"


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("../escaped.txt", tarfile.REGTYPE, "leaves the destination"),
        ("/tmp/absolute.txt", tarfile.REGTYPE, "leaves the destination"),
        ("1/link", tarfile.SYMTYPE, "not a file or folder"),
        ("1/hardlink", tarfile.LNKTYPE, "not a file or folder"),
        ("1/fifo", tarfile.FIFOTYPE, "not a file or folder"),
        ("1/device", tarfile.CHRTYPE, "not a file or folder"),
    ],
)
def test_an_archive_cannot_write_outside_the_folder(
    s3: Any, tmp_path: Path, tar_filter: str, name: str, kind: bytes, reason: str
) -> None:
    info = file_info(name, 1 if kind == tarfile.REGTYPE else 0, kind=kind)
    info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    s3.put_object(
        Bucket=BUCKET, Key="evil/model.tar.gz", Body=tar_of((info, b"x" if kind == tarfile.REGTYPE else None))
    )
    with pytest.raises(FetchError, match=reason):
        fetch(f"s3://{BUCKET}/evil/model.tar.gz", tmp_path / "m")
    assert not (tmp_path / "escaped.txt").exists() and _empty(tmp_path / "m")


def test_archives_unpack_as_plain_files(s3: Any, model_root: Path, tmp_path: Path, tar_filter: str) -> None:
    """Owner and set-id bits of the archive are not kept, on either path (what the data filter does)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(model_root / "1", arcname="1")
        setuid = file_info("1/assets/run", 4, mode=0o4777)
        setuid.uid, setuid.gid, setuid.uname, setuid.gname = 4321, 4321, "nobody-here", "nobody-here"
        tar.addfile(setuid, io.BytesIO(b"data"))
        tar.addfile(file_info("1/assets/private", 2, mode=0o400), io.BytesIO(b"ok"))
    s3.put_object(Bucket=BUCKET, Key="ok/model.tar.gz", Body=buffer.getvalue())
    dest = fetch(f"s3://{BUCKET}/ok/model.tar.gz", tmp_path / "m")
    _loads(dest)
    run, private = (dest / "1" / "assets" / "run").stat(), (dest / "1" / "assets" / "private").stat()
    assert stat.S_IMODE(run.st_mode) == 0o755, "no set-uid bit, no write for group and others"
    assert stat.S_IMODE(private.st_mode) == 0o600, "the owner can read and write"
    assert run.st_uid == os.geteuid() and (dest / "1" / "assets" / "run").read_bytes() == b"data"


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.75])
def test_a_truncated_archive_is_a_one_line_reason(
    s3: Any, model_root: Path, tmp_path: Path, capsys, tar_filter: str, cut: float
) -> None:
    data = model_tar(model_root)
    s3.put_object(Bucket=BUCKET, Key="cut/model.tar.gz", Body=data[: int(len(data) * cut)])
    assert cli_main(["fetch-model", f"s3://{BUCKET}/cut/model.tar.gz", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mri-classifier fetch-model: cannot unpack the archive: it is truncated or corrupt")
    assert err.count("\n") == 1 and _empty(tmp_path / "m")


def gzip_bomb(declared: int, written: int) -> bytes:
    """A ``.tar.gz`` whose one member announces ``declared`` bytes of zeros, of which the stream holds only
    ``written``: a few KB that would expand to ``declared`` bytes (concatenated gzip members of zeros). Reading
    its data would end in 'truncated': a refusal by size proves that only the header was read."""
    header = tarfile.TarInfo("1/variables/variables.data-00000-of-00001")
    header.size = declared
    zeros = gzip.compress(b"\0" * MIB, compresslevel=9)
    return gzip.compress(header.tobuf(format=tarfile.PAX_FORMAT)) + zeros * (written // MIB)


def test_a_gzip_bomb_is_refused_at_its_header(s3: Any, tmp_path: Path, capsys, tar_filter: str) -> None:
    bomb = gzip_bomb(declared=64 * 1024 * MIB, written=32 * MIB)  # 64 GiB announced, 32 MiB of zeros sent
    assert len(bomb) < 100_000
    s3.put_object(Bucket=BUCKET, Key="bomb/model.tar.gz", Body=bomb)
    assert cli_main(["fetch-model", f"s3://{BUCKET}/bomb/model.tar.gz", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "it unpacks to more than the limit of 2048 MiB (--max-unpacked-mib)" in err and _empty(tmp_path / "m")


def test_the_unpacked_size_is_the_sum_of_the_members(s3: Any, tmp_path: Path, capsys) -> None:
    members = [(file_info(f"1/part{i}", MIB // 2), b"\1" * (MIB // 2)) for i in range(3)]
    s3.put_object(Bucket=BUCKET, Key="big/model.tar.gz", Body=tar_of(*members))
    uri = f"s3://{BUCKET}/big/model.tar.gz"
    assert cli_main(["fetch-model", "--max-unpacked-mib", "1", uri, str(tmp_path / "m")]) == 1
    assert "more than the limit of 1 MiB (--max-unpacked-mib)" in capsys.readouterr().err
    assert _empty(tmp_path / "m"), "nothing is extracted before every header passed"
    with pytest.raises(FetchError, match=r"no saved_model\.pb"):  # under a limit of 2 MiB it unpacks
        fetch(uri, tmp_path / "m", limits=Limits(max_unpacked_bytes=2 * MIB))


def test_the_s3_download_size_is_capped(s3: Any, model_root: Path, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="huge/model.tar.gz", Body=os.urandom(MIB + 1))
    with pytest.raises(FetchError, match=r"over the limit of 1 MiB \(--max-download-mib\)"):
        fetch(f"s3://{BUCKET}/huge/model.tar.gz", tmp_path / "m", limits=Limits(max_download_bytes=MIB))
    for index in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"many/1/file{index}", Body=os.urandom(MIB // 2))
    with pytest.raises(FetchError, match=r"objects under 's3://models/many/' are over the limit of 1 MiB"):
        fetch(f"s3://{BUCKET}/many/", tmp_path / "m", limits=Limits(max_download_bytes=MIB))
    assert _empty(tmp_path / "m")


def test_the_archive_sha256_is_checked(s3: Any, model_root: Path, tmp_path: Path, capsys) -> None:
    data = model_tar(model_root)
    s3.put_object(Bucket=BUCKET, Key="sum/model.tar.gz", Body=data)
    uri, dest = f"s3://{BUCKET}/sum/model.tar.gz", str(tmp_path / "m")
    wrong = hashlib.sha256(data + b"x").hexdigest()
    assert cli_main(["fetch-model", "--sha256", wrong, uri, dest]) == 1
    err = capsys.readouterr().err
    assert f"the archive's SHA-256 is {hashlib.sha256(data).hexdigest()}, not the expected {wrong}" in err
    assert _empty(tmp_path / "m")
    assert cli_main(["fetch-model", "--sha256", "12ab", uri, dest]) == 1
    assert "--sha256 must be 64 hexadecimal digits" in capsys.readouterr().err
    assert cli_main(["fetch-model", "--sha256", hashlib.sha256(data).hexdigest().upper(), uri, dest]) == 0
    assert cli_main(["fetch-model", "--sha256=", uri, dest]) == 0, "empty: not checked (the Kubernetes default)"
    _loads(tmp_path / "m")
    s3.put_object(Bucket=BUCKET, Key="folder/1/saved_model.pb", Body=b"x")
    with pytest.raises(FetchError, match="--sha256 checks an archive"):
        fetch(f"s3://{BUCKET}/folder/", tmp_path / "n", limits=Limits(sha256=wrong))


# --- HTTP(S) ----------------------------------------------------------------------------------------------------


@dataclass
class Page:
    """What the test server answers for one path."""

    body: bytes = b""
    length: int | None = -1  # Content-Length sent: -1 the true one, None none (the closed connection ends it)
    repeat: int = 1  # the body is sent this many times (a stream longer than any limit)
    redirect: str | None = None


@dataclass
class Site:
    """A web server on 127.0.0.1 (HTTPS when given a TLS context) serving ``pages``; it records each request's
    path and Authorization header, and how many bytes it managed to send."""

    base: str
    pages: dict[str, Page] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)


def _serve(tls: ssl.SSLContext | None) -> Iterator[Site]:
    site = Site("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append((self.path, self.headers.get("Authorization")))
            path = urllib.parse.urlsplit(self.path).path
            page = site.pages.get(path)
            if page is None:
                self.send_error(404)
                return
            if page.redirect is not None:
                self.send_response(302)
                self.send_header("Location", page.redirect)
                self.end_headers()
                return
            self.send_response(200)
            length = len(page.body) * page.repeat if page.length == -1 else page.length
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            site.sent[path] = 0
            try:
                for _ in range(page.repeat):
                    self.wfile.write(page.body)
                    site.sent[path] += len(page.body)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the client stopped reading

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    site.base = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_site() -> Iterator[Site]:
    yield from _serve(None)


@pytest.fixture
def https_site(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """HTTPS with a self-signed certificate for 127.0.0.1, trusted through ``SSL_CERT_FILE`` (how a private
    CA is given to the command)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fetch-model test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(folder / "cert.pem"))
    yield from _serve(context)


def test_http_archive(http_site: Site, model_root: Path, tmp_path: Path) -> None:
    http_site.pages["/model.tar.gz"] = Page(model_tar(model_root))
    _loads(fetch(f"{http_site.base}/model.tar.gz", tmp_path / "m", limits=HTTP))
    with pytest.raises(FetchError, match=r"must be a \.tar\.gz"):
        fetch(f"{http_site.base}/model/", tmp_path / "n", limits=HTTP)
    with pytest.raises(FetchError, match="download failed: HTTP 404"):
        fetch(f"{http_site.base}/missing.tar.gz", tmp_path / "o", limits=HTTP)
    with pytest.raises(FetchError, match=r"refusing plain http://.*--allow-http"):
        fetch(f"{http_site.base}/model.tar.gz", tmp_path / "p")
    assert _empty(tmp_path / "n") and _empty(tmp_path / "o") and _empty(tmp_path / "p")


def test_https_archive_and_redirects(https_site: Site, http_site: Site, model_root: Path, tmp_path: Path) -> None:
    data = model_tar(model_root)
    https_site.pages["/model.tar.gz"] = Page(data)
    https_site.pages["/moved.tar.gz"] = Page(redirect=f"{https_site.base}/model.tar.gz")
    https_site.pages["/to-http.tar.gz"] = Page(redirect=f"{http_site.base}/model.tar.gz")
    http_site.pages["/model.tar.gz"] = Page(data)
    _loads(fetch(f"{https_site.base}/model.tar.gz", tmp_path / "a"))
    _loads(fetch(f"{https_site.base}/moved.tar.gz", tmp_path / "b"))
    with pytest.raises(FetchError, match=r"redirected to http://127\.0\.0\.1:\d+/model\.tar\.gz: only https://"):
        fetch(f"{https_site.base}/to-http.tar.gz", tmp_path / "c")
    assert not http_site.requests, "the plain-HTTP target was never asked"
    _loads(fetch(f"{https_site.base}/to-http.tar.gz", tmp_path / "d", limits=HTTP))
    assert _empty(tmp_path / "c")


def test_a_redirect_is_followed_only_to_https() -> None:
    request = urllib.request.Request("https://127.0.0.1/model.tar.gz")
    for target, allow_http in (
        (f"http://host/model.tar.gz?{PRESIGNED}", False),
        ("ftp://host/model.tar.gz", True),
        ("file:///etc/passwd", True),
    ):
        with pytest.raises(FetchError, match="only https:// is followed") as raised:
            HttpsOnlyRedirects(allow_http).redirect_request(request, None, 302, "Found", {}, target)
        assert not any(secret in str(raised.value) for secret in SECRETS)


def test_a_short_read_is_detected(http_site: Site, model_root: Path, tmp_path: Path) -> None:
    data = model_tar(model_root)
    http_site.pages["/short.tar.gz"] = Page(data, length=len(data) + 4096)  # the connection closes early
    with pytest.raises(FetchError, match=rf"short read: the download ended after {len(data)} of the"):
        fetch(f"{http_site.base}/short.tar.gz", tmp_path / "m", limits=HTTP)
    assert _empty(tmp_path / "m")


def test_the_http_download_size_is_capped_while_it_streams(http_site: Site, tmp_path: Path) -> None:
    chunk = b"\0" * (256 * 1024)
    http_site.pages["/announced.tar.gz"] = Page(chunk, repeat=4 * 64)  # 64 MiB with its Content-Length
    http_site.pages["/unannounced.tar.gz"] = Page(chunk, length=None, repeat=4 * 64)  # the same without
    limits = Limits(max_download_bytes=MIB, allow_http=True)
    with pytest.raises(FetchError, match=r"the download is 64 MiB, over the limit of 1 MiB \(--max-download-mib\)"):
        fetch(f"{http_site.base}/announced.tar.gz", tmp_path / "m", limits=limits)
    with pytest.raises(FetchError, match=r"the download is over the limit of 1 MiB \(--max-download-mib\)"):
        fetch(f"{http_site.base}/unannounced.tar.gz", tmp_path / "m", limits=limits)
    assert http_site.sent["/unannounced.tar.gz"] < 32 * MIB, "the client stopped reading at the limit"
    assert _empty(tmp_path / "m")


# --- nothing secret in any line ---------------------------------------------------------------------------------


def _with_secret(style: str, uri: str) -> str:
    """``uri`` carrying credentials: a presigned query string, or ``user:password@``."""
    parts = urllib.parse.urlsplit(uri)
    if style == "presigned":
        return urllib.parse.urlunsplit(parts._replace(query=PRESIGNED))
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{USER}:{PASSWORD}@{parts.netloc}"))


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: (path on the HTTPS site, extra flags, exit status, what stderr/stdout says)
CASES: dict[str, tuple[str, list[str], int, str]] = {
    "success": ("/model.tar.gz", [], 0, "fetched https://"),
    "not found": ("/missing.tar.gz", [], 1, "download failed: HTTP 404"),
    "not an archive": ("/model/", [], 1, "must be a .tar.gz archive"),
    "no model inside": ("/empty.tar.gz", [], 1, "no saved_model.pb in what 'https://"),
    "truncated": ("/truncated.tar.gz", [], 1, "truncated or corrupt"),
    "short read": ("/short.tar.gz", [], 1, "short read"),
    "too large": ("/large.tar.gz", ["--max-download-mib", "1"], 1, "over the limit of 1 MiB"),
    "unpacks too large": ("/zeros.tar.gz", ["--max-unpacked-mib", "1"], 1, "more than the limit of 1 MiB"),
    "wrong checksum": ("/model.tar.gz", ["--sha256", "0" * 64], 1, "SHA-256"),
    "redirect to http": ("/to-http.tar.gz", [], 1, "redirected to http://127.0.0.1"),
    "connection refused": ("CLOSED", [], 1, "download failed"),
    "plain http": ("HTTP", [], 1, "refusing plain http://"),
    "other scheme": ("FTP", [], 1, "unsupported URI scheme 'ftp'"),
    "s3 with credentials": ("S3", [], 1, "s3://"),
}


@pytest.mark.parametrize("style", ["presigned", "userinfo"])
@pytest.mark.parametrize("case", list(CASES))
def test_credentials_in_the_uri_are_never_printed(
    https_site: Site, aws_env: None, model_root: Path, tmp_path: Path, capsys, caplog, style: str, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    path, flags, status, says = CASES[case]
    data = model_tar(model_root)
    large = model_tar(model_root) + os.urandom(MIB)  # over 1 MiB whatever the tiny model's size
    https_site.pages.update(
        {
            "/model.tar.gz": Page(data),
            "/empty.tar.gz": Page(tar_of((file_info("readme.txt", 2), b"hi"))),
            "/truncated.tar.gz": Page(data[: len(data) // 2]),
            "/short.tar.gz": Page(data, length=len(data) + 100),
            "/large.tar.gz": Page(large),
            "/zeros.tar.gz": Page(tar_of((file_info("1/zeros", 2 * MIB), b"\0" * (2 * MIB)))),
            "/to-http.tar.gz": Page(redirect=_with_secret("presigned", "http://127.0.0.1:9/model.tar.gz")),
        }
    )
    base = {
        "CLOSED": f"https://127.0.0.1:{_closed_port()}/model.tar.gz",
        "HTTP": "http://127.0.0.1:9/model.tar.gz",
        "FTP": "ftp://127.0.0.1/model.tar.gz",
        "S3": f"s3://{BUCKET}/model.tar.gz",
    }.get(path, https_site.base + path)
    uri = _with_secret(style, base)
    dest = tmp_path / "m"
    with mock_aws():
        assert cli_main(["fetch-model", *flags, uri, str(dest)]) == status
    out, err = capsys.readouterr()
    printed = out + err
    assert says in printed, printed
    assert len(printed.splitlines()) == 1, "one line"
    for secret in SECRETS:
        assert secret not in printed and secret not in caplog.text, f"{secret!r} printed: {printed}"
    if case in ("success", "not an archive", "no model inside", "plain http"):
        assert redact(uri) in printed, "the URI is shown, without its credentials"
    if case == "success":
        _loads(dest)
        (request_path, authorization), *_ = https_site.requests
        assert PASSWORD not in request_path
        if style == "userinfo":  # sent as HTTP basic authentication, not in the URL
            assert authorization == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        else:
            assert authorization is None and request_path == f"/model.tar.gz?{PRESIGNED}"
    else:
        assert _empty(dest)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"https://host/m.tar.gz?{PRESIGNED}", "https://host/m.tar.gz?[redacted]"),
        (f"https://{USER}:{PASSWORD}@host:8443/m.tar.gz#frag", "https://[redacted]@host:8443/m.tar.gz"),
        ("s3://bucket/key/model.tar.gz", "s3://bucket/key/model.tar.gz"),
        ("https://[::1/x", "[redacted]"),
    ],
)
def test_redact(uri: str, shown: str) -> None:
    assert redact(uri) == shown
