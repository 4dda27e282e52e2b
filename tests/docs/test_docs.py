"""The pages stay true to the code: example answers match a live answer and the shipped model's version, every
relative link and anchor resolves, every ``make`` target, ``mri-classifier`` flag and ``MRI_*`` name quoted
exists, and every shell block parses. ``test_checks.py`` shows that each check fails on a page that drifted."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from service.labels import CLASSES
from service.versions import find_version_dir
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
