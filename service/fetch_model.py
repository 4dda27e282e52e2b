"""``mri-classifier fetch-model URI DEST``: put a model from object storage into a folder before the server starts.

What KServe's storage initializer does, for the Kubernetes init container of ``k8s/components/model-download``
(the serving image itself, so nothing else is pulled):

* ``s3://bucket/path/model.tar.gz`` (``.tar.gz`` / ``.tgz``): the archive ``mri-classifier sagemaker package``
  or a SageMaker training job writes, unpacked into DEST;
* ``s3://bucket/prefix/``: every object under the prefix, copied to DEST with its relative path;
* ``https://host/path/model.tar.gz``: the archive, unpacked into DEST.

Credentials and the endpoint come from boto3's usual chain (IRSA / pod identity, ``AWS_*`` variables,
``AWS_ENDPOINT_URL_S3`` for MinIO and other S3-compatible stores). An archive may hold only plain files and
folders inside DEST (no links, devices, absolute paths or ``..``; plus tarfile's ``data`` filter where the Python
has it); the copy is made in a hidden folder
and moved into place only once it holds a model (``saved_model.pb``), so a half-done download is never served.
Exit status 0 on success, 1 with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
SAVED_MODEL_FILE = "saved_model.pb"
HTTP_TIMEOUT_S = 60
CHUNK = 1 << 20


class FetchError(Exception):
    """A model could not be fetched; the message is the reason."""


def _is_archive(path: str) -> bool:
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def _checked_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Every member, when all are plain files or folders that stay inside ``dest`` (no links, devices, absolute
    paths or ``..``); a model needs nothing else."""
    root = dest.resolve()
    members = tar.getmembers()
    for member in members:
        if not (member.isfile() or member.isdir()):
            raise FetchError(f"cannot unpack the archive: {member.name!r} is not a file or folder")
        if member.name.startswith("/") or not (root / member.name).resolve().is_relative_to(root):
            raise FetchError(f"cannot unpack the archive: {member.name!r} leaves the destination")
    return members


def unpack(archive: Path, dest: Path) -> None:
    """Unpack a ``.tar.gz`` of plain files and folders into ``dest``; tarfile's ``data`` filter too where this
    Python has it (3.11.4+; Debian 12's 3.11.2 has not)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, dest)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Debian 12's Python: the members were checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"cannot unpack the archive: {exc}") from None


def _s3_client() -> Any:
    try:
        import boto3
    except ModuleNotFoundError:
        raise FetchError("s3:// needs boto3 (the aws extra, installed in the serving images)") from None
    return boto3.client("s3")


def fetch_s3(uri: str, staging: Path, client: Any | None = None) -> None:
    """An archive object (unpacked) or every object under a prefix (copied) into ``staging``."""
    parsed = urllib.parse.urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise FetchError(f"no bucket in {uri!r}")
    s3 = client or _s3_client()
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if _is_archive(key):
            archive = staging.parent / (staging.name + ".tar.gz")
            s3.download_file(bucket, key, str(archive))
            try:
                unpack(archive, staging)
            finally:
                archive.unlink(missing_ok=True)
            return
        prefix = key if not key or key.endswith("/") else key + "/"
        count = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :]
                if not relative or relative.endswith("/"):
                    continue
                target = (staging / relative).resolve()
                if not target.is_relative_to(staging.resolve()):
                    raise FetchError(f"object key {item['Key']!r} leaves the destination")
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))
                count += 1
        if count == 0:
            raise FetchError(f"no objects under {uri!r}")
    except (BotoCoreError, ClientError) as exc:
        raise FetchError(f"S3: {exc}") from None


def fetch_http(uri: str, staging: Path) -> None:
    """A ``.tar.gz`` over HTTP(S), unpacked into ``staging``."""
    if not _is_archive(urllib.parse.urlparse(uri).path):
        raise FetchError("an https:// model must be a .tar.gz archive (model.tar.gz)")
    archive = staging.parent / (staging.name + ".tar.gz")
    try:
        with urllib.request.urlopen(uri, timeout=HTTP_TIMEOUT_S) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out, CHUNK)
        unpack(archive, staging)
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise FetchError(f"download failed: {exc}") from None
    finally:
        archive.unlink(missing_ok=True)


def fetch(uri: str, dest: Path, s3_client: Any | None = None) -> Path:
    """Fetch the model at ``uri`` into ``dest``, a folder of its own (created if missing; what it held, e.g. an
    earlier fetch, is replaced once the new model is complete). Returns ``dest``."""
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme not in ("s3", "https", "http"):
        raise FetchError(f"unsupported URI scheme {scheme or '(none)'!r}: use s3:// or https://")
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    try:
        if scheme == "s3":
            fetch_s3(uri, staging, s3_client)
        else:
            fetch_http(uri, staging)
        if not any(p.name == SAVED_MODEL_FILE for p in staging.rglob(SAVED_MODEL_FILE)):
            raise FetchError(f"no {SAVED_MODEL_FILE} in what {uri!r} holds")
        for old in dest.iterdir():  # a previous fetch (an init container that ran again)
            if old == staging:
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        for entry in staging.iterdir():
            entry.rename(dest / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def run(argv: Sequence[str]) -> int:
    """Command-line entry point (``mri-classifier fetch-model``)."""
    parser = argparse.ArgumentParser(
        prog="mri-classifier fetch-model", description="Download a model (s3:// or https://) into a folder."
    )
    parser.add_argument("uri", help="s3://bucket/model.tar.gz, s3://bucket/prefix/ or https://host/model.tar.gz")
    parser.add_argument("dest", type=Path, help="folder to fill, e.g. /opt/ml/model")
    args = parser.parse_args(list(argv))
    try:
        fetch(args.uri, args.dest)
    except FetchError as exc:
        sys.stderr.write(f"mri-classifier fetch-model: {exc}\n")
        return 1
    names = sorted(p.name for p in args.dest.iterdir())
    sys.stdout.write(f"fetched {args.uri} into {args.dest}: {', '.join(names)}\n")
    return 0
