"""The pages stay true to the code: example answers match a live answer and the shipped model's version, every
relative link and anchor resolves, every ``make`` target, ``mri-classifier`` flag and ``MRI_*`` name quoted
exists, and every shell block parses. ``test_checks.py`` shows that each check fails on a page that drifted."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from service.inference.versions import find_version_dir
from service.labels import CLASSES
from tests.docs import checks
from tests.service import images

PAGES = checks.pages()
SHIPPED = checks.ROOT / "models" / "mri-classifier"
#: The pages whose example answers are checked against the live service.
ANSWER_PAGES = [checks.ROOT / "README.md", checks.ROOT / "docs" / "api.md", checks.ROOT / "docs" / "ood.md"]


def _id(page: Path) -> str:
    return page.relative_to(checks.ROOT).as_posix()


def test_the_pages_are_found():
    names = {_id(p) for p in PAGES}
    assert {"README.md", "CHANGELOG.md", "MODEL_CARD.md", "docs/api.md", "docs/glossary.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_relative_links_and_anchors_resolve(page: Path):
    assert checks.link_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_make_targets_exist(page: Path):
    assert checks.make_problems(page.read_text(), checks.make_targets(), _id(page)) == []


@cache
def _known_names() -> frozenset[str]:
    return frozenset(checks.names_in_code())


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_mri_names_exist(page: Path):
    assert checks.name_problems(page.read_text(), set(_known_names()), _id(page)) == []


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_shell_blocks_parse(page: Path):
    assert checks.shell_problems(page.read_text(), _id(page)) == []


@cache
def _help(path: tuple[str, ...]) -> str:
    return checks.cli_help(path)


@pytest.mark.slow  # one `mri-classifier <cmd> --help` process per command quoted
def test_cli_commands_and_flags_exist():
    problems = []
    for page in PAGES:
        problems += checks.flag_problems(checks.commands_with_flags(page.read_text()), _help, _id(page))
    assert problems == []


def _shipped_version() -> int:
    folder = find_version_dir(SHIPPED)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert int(folder.name) == metadata["version"]
    return int(metadata["version"])


def test_example_answers_match_a_live_answer(client):
    scan = images.jpeg(1)
    predicted = client.post("/predict", files={"file": ("x.jpg", scan, "image/jpeg")})
    explained = client.post("/explain?heatmap=true", files={"file": ("x.jpg", scan, "image/jpeg")})
    assert predicted.status_code == explained.status_code == 200
    live_predict, live_explain = predicted.json(), explained.json()
    required_predict = {*live_predict, *live_predict["predictions"][0]}
    version = _shipped_version()
    problems, seen = [], 0
    for page in ANSWER_PAGES:
        for example in checks.json_examples(page.read_text()):
            seen += 1
            if '"explanation"' in example:
                live, required = live_explain, {*live_explain, *live_explain["prediction"]}
            elif '"predictions"' in example:
                live, required = live_predict, required_predict
            else:  # a fragment, such as one prediction's "check"
                live, required = live_predict, set()
            problems += checks.example_problems(example, live, CLASSES, version, required, _id(page))
    assert seen >= 4, "the example answers were not found: the test would prove nothing"
    assert problems == []


def test_the_ingress_example_is_a_valid_manifest_for_the_service():
    import kubernetes_validate
    import yaml

    text = (checks.ROOT / "docs" / "kubernetes.md").read_text()
    manifests = [yaml.safe_load(b.body) for b in checks.code_blocks(text) if b.language == "yaml"]
    ingresses = [m for m in manifests if isinstance(m, dict) and m.get("kind") == "Ingress"]
    assert len(ingresses) == 1
    ingress = ingresses[0]
    kubernetes_validate.validate(ingress, kubernetes_validate.utils.latest_version(), strict=True)
    service = yaml.safe_load((checks.ROOT / "k8s" / "base" / "service.yaml").read_text())
    ports = {port["name"] for port in service["spec"]["ports"]}
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"] and backend["port"]["name"] in ports
    exposed = {p["path"] for p in paths}
    assert not {"/metrics", "/healthz", "/readyz", "/ping"} & exposed  # open without a key: not published
    assert ingress["spec"]["tls"] and ingress["metadata"]["namespace"] == "mri-classifier"


def test_shipped_files_hold_no_machine_paths():
    folders = ("service", "training", "benchmarks", "docker", "k8s", "docs")
    files = [checks.ROOT / "Makefile"] + [p for f in folders for p in (checks.ROOT / f).rglob("*") if p.is_file()]
    offending = [
        p.relative_to(checks.ROOT).as_posix()
        for p in files
        if p.suffix not in (".png", ".pb", ".csv") and "/work/" in p.read_text(errors="ignore")
    ]
    assert offending == []


def test_the_sample_slice_is_a_small_grey_png_the_service_answers(client):
    from PIL import Image

    path = checks.ROOT / "docs" / "sample-slice.png"
    assert path.stat().st_size < 64_000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "L"
    answer = client.post("/predict", files={"file": ("sample-slice.png", path.read_bytes(), "image/png")})
    assert answer.status_code == 200
    assert answer.json()["predictions"][0]["check"]["likely_mri"] is True


def test_make_run_takes_the_mri_settings_from_the_environment():
    import os
    import subprocess

    env = {**os.environ, "MRI_HOST": "0.0.0.0", "MRI_PORT": "9099", "MRI_MODEL_DIR": "/models/x"}
    env.pop("HOST", None), env.pop("PORT", None), env.pop("MODEL_DIR", None)

    def serve_line(*args: str) -> str:
        out = subprocess.run(["make", "-n", "run", *args], cwd=checks.ROOT, env=env, capture_output=True, text=True)
        return next(line for line in out.stdout.splitlines() if " serve " in line)

    assert serve_line().endswith("serve --model-dir /models/x --host 0.0.0.0 --port 9099")
    assert "--host 10.1.2.3 " in serve_line("HOST=10.1.2.3")  # the command line wins
