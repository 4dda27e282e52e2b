"""``mri-classifier fetch-model URI DEST``: put a model from object storage into a folder before the server starts.

What KServe's storage initializer does, for the Kubernetes init container of ``k8s/components/model-download``
(the serving image itself, so nothing else is pulled):

* ``s3://bucket/path/model.tar.gz`` (``.tar.gz`` / ``.tgz``): the archive ``mri-classifier sagemaker package``
  or a SageMaker training job writes, unpacked into DEST;
* ``s3://bucket/prefix/``: every object under the prefix, copied to DEST with its relative path;
* ``https://host/path/model.tar.gz``: the archive, unpacked into DEST (a presigned URL's query string and a
  ``user:password@`` part, sent as HTTP basic authentication, are accepted). Plain ``http://`` only with
  ``--allow-http``; a redirect is followed only to ``https://`` (or ``http://`` when allowed).

Credentials and the endpoint come from boto3's usual chain (IRSA / pod identity, ``AWS_*`` variables,
``AWS_ENDPOINT_URL_S3`` for MinIO and other S3-compatible stores). Nothing the command prints or raises holds a
URI's query string or user-info (``redact``): a presigned URL's signature never reaches a pod's log.

Limits, checked while the bytes stream (nothing past a limit is written): the download (the archive, or the sum
of a prefix's objects) and the unpacked size (the sum of the archive's member sizes, read header by header
before anything is extracted), a short read (fewer bytes than ``Content-Length``), and the archive's SHA-256
when one is given. An archive may hold only plain files and folders inside DEST (no links, devices, absolute
paths or ``..``); tarfile's ``data`` filter is applied where the Python has it (3.11.4+), and where it has not
(Debian 12's 3.11.2) the same owner and mode rules are applied to the checked members here. The copy is made
in a hidden folder and moved into place only once it holds a model (``saved_model.pb``), so a half-done
download is never served. Exit status 0 on success, 1 with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
SAVED_MODEL_FILE = "saved_model.pb"
HTTP_TIMEOUT_S = 60
CHUNK = 1 << 20
MIB = 1 << 20
DEFAULT_MAX_DOWNLOAD_MIB = 1024
DEFAULT_MAX_UNPACKED_MIB = 2048
#: Most entries (files and folders) an archive or a prefix may hold: a model has a handful.
MAX_ENTRIES = 10_000
STAGING_PREFIX = ".fetch-"
REDACTED = "[redacted]"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FetchError(Exception):
    """A model could not be fetched; the message is the reason (never a URI's credentials)."""


@dataclass(frozen=True)
class Limits:
    """What a fetch may download and unpack, and what it must match."""

    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_MIB * MIB
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_MIB * MIB
    sha256: str | None = None  # the archive's expected SHA-256 (hex); None: not checked
    allow_http: bool = False  # plain http:// (a test server, a cluster-internal store)


def redact(uri: str) -> str:
    """``uri`` as it may be printed: its user-info and query string (a presigned URL's credentials and
    signature) replaced by ``[redacted]``, its fragment dropped. The one form of a URI in any message."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, REDACTED if parts.query else "", ""))


def _scrubbed(text: str, uri: str) -> str:
    """A library's message about ``uri`` with the URI, its query and its user-info redacted (in case it quotes
    them: a redirect's target, a host with user-info)."""
    parts = _split(uri)
    secrets = [uri, parts.query, urllib.parse.unquote(parts.query)]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        password = userinfo.partition(":")[2]
        secrets += [userinfo, urllib.parse.unquote(userinfo), password, urllib.parse.unquote(password)]
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, redact(uri) if secret == uri else REDACTED)
    return text


def _split(uri: str) -> urllib.parse.SplitResult:
    try:
        return urllib.parse.urlsplit(uri)
    except ValueError:  # an unbalanced IPv6 bracket, for example
        raise FetchError("not a valid URI") from None


def _mib(size: int) -> str:
    return f"{size / MIB:g} MiB"


def _is_archive(path: str) -> bool:
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def _copy(stream: Any, out: IO[bytes], expected: int | None, limit: int, digest: Any = None) -> int:
    """Copy ``stream`` into ``out`` chunk by chunk, stopping as soon as more than ``limit`` bytes came (or
    ``expected``, the announced length, is over it), and refusing fewer bytes than announced. Bytes copied."""
    if expected is not None and expected > limit:
        raise FetchError(f"the download is {_mib(expected)}, over the limit of {_mib(limit)} (--max-download-mib)")
    total = 0
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise FetchError(f"the download is over the limit of {_mib(limit)} (--max-download-mib)")
        if digest is not None:
            digest.update(chunk)
        out.write(chunk)
    if expected is not None and total != expected:
        raise FetchError(f"short read: the download ended after {total} of the {expected} bytes announced")
    return total


def _check_sha256(digest: Any, limits: Limits) -> None:
    if limits.sha256 is not None and digest.hexdigest() != limits.sha256:
        raise FetchError(f"the archive's SHA-256 is {digest.hexdigest()}, not the expected {limits.sha256}")


def _checked_members(tar: tarfile.TarFile, dest: Path, max_unpacked: int) -> list[tarfile.TarInfo]:
    """Every member, when all are plain files or folders that stay inside ``dest`` (no links, devices, sparse
    files, absolute paths or ``..``; a model needs nothing else) and their sizes add up to at most
    ``max_unpacked``. Read header by header: a refusal stops the reading (a gzip bomb is never expanded)."""
    root = dest.resolve()
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        if not (member.isfile() or member.isdir()) or member.issparse():
            raise FetchError(f"cannot unpack the archive: {member.name!r} is not a file or folder")
        if member.name.startswith("/") or not (root / member.name).resolve().is_relative_to(root):
            raise FetchError(f"cannot unpack the archive: {member.name!r} leaves the destination")
        total += member.size
        if total > max_unpacked:
            raise FetchError(
                f"cannot unpack the archive: it unpacks to more than the limit of {_mib(max_unpacked)} "
                "(--max-unpacked-mib)"
            )
        members.append(member)
        if len(members) > MAX_ENTRIES:
            raise FetchError(f"cannot unpack the archive: more than {MAX_ENTRIES} entries")
    return members


def _data_only(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """A checked member as tarfile's ``data`` filter would extract it, for a Python without the filter: no
    owner (the current user's), no set-id or sticky bits, no write for group and others, files readable and
    writable by their owner, folders with the usual mode."""
    plain = copy.copy(member)
    if member.isdir():
        plain.mode = 0o755
    else:
        mode = member.mode & 0o755
        plain.mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    plain.uid, plain.gid, plain.uname, plain.gname = os.geteuid(), os.getegid(), "", ""
    return plain


def unpack(archive: Path, dest: Path, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_MIB * MIB) -> None:
    """Unpack a ``.tar.gz`` of plain files and folders into ``dest``, at most ``max_unpacked_bytes`` in all;
    with tarfile's ``data`` filter where this Python has it (3.11.4+), else with its rules applied here."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, dest, max_unpacked_bytes)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Debian 12's Python 3.11.2: the members were checked above and are made plain here
                tar.extractall(dest, members=[_data_only(member) for member in members])
    except (EOFError, zlib.error) as exc:
        raise FetchError(f"cannot unpack the archive: it is truncated or corrupt ({exc})") from None
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"cannot unpack the archive: {exc}") from None


def _s3_client() -> Any:
    try:
        import boto3
    except ModuleNotFoundError:
        raise FetchError("s3:// needs boto3 (the aws extra, installed in the serving images)") from None
    return boto3.client("s3")


def _s3_download(s3: Any, bucket: str, key: str, target: Path, limit: int, digest: Any = None) -> int:
    """One object into ``target``, streamed under ``limit`` bytes; bytes written."""
    response = s3.get_object(Bucket=bucket, Key=key)
    length = response.get("ContentLength")
    with closing(response["Body"]) as body, target.open("wb") as out:
        return _copy(body, out, length if isinstance(length, int) else None, limit, digest)


def fetch_s3(uri: str, staging: Path, client: Any | None = None, limits: Limits | None = None) -> None:
    """An archive object (unpacked) or every object under a prefix (copied) into ``staging``."""
    limits = limits or Limits()
    parsed = _split(uri)
    if "@" in parsed.netloc:
        raise FetchError(f"credentials do not belong in an s3:// URI ({redact(uri)}): use IRSA or AWS_* variables")
    if parsed.query:
        raise FetchError(f"an s3:// URI takes no query string ({redact(uri)})")
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise FetchError(f"no bucket in {redact(uri)!r}")
    s3 = client or _s3_client()
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if _is_archive(key):
            archive = staging.parent / (staging.name + ".tar.gz")
            try:
                digest = hashlib.sha256()
                _s3_download(s3, bucket, key, archive, limits.max_download_bytes, digest)
                _check_sha256(digest, limits)
                unpack(archive, staging, limits.max_unpacked_bytes)
            finally:
                archive.unlink(missing_ok=True)
            return
        if limits.sha256 is not None:
            raise FetchError("--sha256 checks an archive (.tar.gz); an s3:// prefix is a folder of objects")
        prefix = key if not key or key.endswith("/") else key + "/"
        objects: list[tuple[str, Path]] = []
        total = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :]
                if not relative or relative.endswith("/"):
                    continue
                target = (staging / relative).resolve()
                if not target.is_relative_to(staging.resolve()):
                    raise FetchError(f"object key {item['Key']!r} leaves the destination")
                objects.append((item["Key"], target))
                total += int(item.get("Size", 0))
                if total > limits.max_download_bytes:
                    raise FetchError(
                        f"the objects under {redact(uri)!r} are over the limit of "
                        f"{_mib(limits.max_download_bytes)} (--max-download-mib)"
                    )
                if len(objects) > MAX_ENTRIES:
                    raise FetchError(f"more than {MAX_ENTRIES} objects under {redact(uri)!r}")
        if not objects:
            raise FetchError(f"no objects under {redact(uri)!r}")
        left = limits.max_download_bytes
        for object_key, target in objects:
            target.parent.mkdir(parents=True, exist_ok=True)
            left -= _s3_download(s3, bucket, object_key, target, left)
    except (BotoCoreError, ClientError) as exc:
        raise FetchError(f"S3: {_scrubbed(str(exc), uri)}") from None
    except OSError as exc:
        raise FetchError(f"download failed: {_scrubbed(str(exc), uri)}") from None


class HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, followed only to ``https://`` (``http://`` when allowed); the basic authentication
    of the first request is never sent on (it is an unredirected header)."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            raise FetchError(
                f"the server redirected to {redact(newurl)}: only https:// is followed (--allow-http for http://)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _request(uri: str) -> urllib.request.Request:
    """The request for ``uri``: its user-info, if any, sent as HTTP basic authentication, not in the URL."""
    parts = _split(uri)
    if "@" not in parts.netloc:
        return urllib.request.Request(uri)
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)))
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
    request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    return request


def _content_length(headers: Any) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isascii() and value.strip().isdigit() else None


def fetch_http(uri: str, staging: Path, limits: Limits | None = None) -> None:
    """A ``.tar.gz`` over HTTPS (or HTTP when allowed), streamed under the limits and unpacked into ``staging``."""
    limits = limits or Limits()
    if not _is_archive(_split(uri).path):
        raise FetchError(f"an https:// model must be a .tar.gz archive (model.tar.gz), not {redact(uri)}")
    archive = staging.parent / (staging.name + ".tar.gz")
    opener = urllib.request.build_opener(HttpsOnlyRedirects(limits.allow_http))
    try:
        digest = hashlib.sha256()
        with opener.open(_request(uri), timeout=HTTP_TIMEOUT_S) as response, archive.open("wb") as out:
            _copy(response, out, _content_length(response.headers), limits.max_download_bytes, digest)
        _check_sha256(digest, limits)
        unpack(archive, staging, limits.max_unpacked_bytes)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"download failed: HTTP {exc.code} {_scrubbed(str(exc.reason), uri)}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError; a bad URL a ValueError
        raise FetchError(f"download failed: {_scrubbed(str(exc) or type(exc).__name__, uri)}") from None
    finally:
        archive.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def fetch(uri: str, dest: Path, s3_client: Any | None = None, limits: Limits | None = None) -> Path:
    """Fetch the model at ``uri`` into ``dest``, a folder of its own (created if missing; what it held, e.g. an
    earlier fetch, is replaced once the new model is complete). Returns ``dest``."""
    limits = limits or Limits()
    if limits.sha256 is not None and not _SHA256.fullmatch(limits.sha256):
        raise FetchError("--sha256 must be 64 hexadecimal digits")
    scheme = _split(uri).scheme.lower()
    if scheme == "http" and not limits.allow_http:
        raise FetchError(f"refusing plain http:// ({redact(uri)}): use https://, or --allow-http")
    if scheme not in ("s3", "https", "http"):
        raise FetchError(f"unsupported URI scheme {scheme or '(none)'!r}: use s3:// or https://")
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(STAGING_PREFIX + "*"):  # left by a fetch that was killed: it would fill the volume
        _remove(stale)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    try:
        if scheme == "s3":
            fetch_s3(uri, staging, s3_client, limits)
        else:
            fetch_http(uri, staging, limits)
        if not any(p.name == SAVED_MODEL_FILE for p in staging.rglob(SAVED_MODEL_FILE)):
            raise FetchError(f"no {SAVED_MODEL_FILE} in what {redact(uri)!r} holds")
        for old in dest.iterdir():  # a previous fetch (an init container that ran again)
            if old != staging:
                _remove(old)
        for entry in staging.iterdir():
            entry.rename(dest / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _mebibytes(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str]) -> tuple[str, Path, Limits]:
    """(URI, destination, limits) from the command line; exits 2 with argparse's usage on a bad option."""
    parser = argparse.ArgumentParser(
        prog="mri-classifier fetch-model", description="Download a model (s3:// or https://) into a folder."
    )
    parser.add_argument("uri", help="s3://bucket/model.tar.gz, s3://bucket/prefix/ or https://host/model.tar.gz")
    parser.add_argument("dest", type=Path, help="folder to fill, e.g. /opt/ml/model")
    parser.add_argument(
        "--sha256", default="", help="the archive's expected SHA-256 (64 hex digits); empty: not checked"
    )
    parser.add_argument(
        "--max-download-mib",
        type=_mebibytes,
        default=DEFAULT_MAX_DOWNLOAD_MIB,
        help="largest download: the archive, or all of a prefix's objects (default %(default)s)",
    )
    parser.add_argument(
        "--max-unpacked-mib",
        type=_mebibytes,
        default=DEFAULT_MAX_UNPACKED_MIB,
        help="largest unpacked archive: the sum of its files (default %(default)s)",
    )
    parser.add_argument("--allow-http", action="store_true", help="accept plain http:// (unencrypted)")
    args = parser.parse_args(list(argv))
    limits = Limits(
        max_download_bytes=args.max_download_mib * MIB,
        max_unpacked_bytes=args.max_unpacked_mib * MIB,
        sha256=args.sha256.strip().lower() or None,
        allow_http=args.allow_http,
    )
    return args.uri, args.dest, limits


def run(argv: Sequence[str]) -> int:
    """Command-line entry point (``mri-classifier fetch-model``)."""
    uri, dest, limits = parse_args(argv)
    try:
        fetch(uri, dest, limits=limits)
    except FetchError as exc:
        sys.stderr.write(f"mri-classifier fetch-model: {exc}\n")
        return 1
    names = sorted(p.name for p in dest.iterdir())
    sys.stdout.write(f"fetched {redact(uri)} into {dest}: {', '.join(names)}\n")
    return 0
