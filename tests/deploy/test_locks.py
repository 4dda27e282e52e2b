"""The hashed lock files agree with pyproject.toml: every requirement of each lock's extras is pinned there, at a
version inside the range pyproject allows, with hashes; each lock says which extras it was compiled from, and
`make lock` compiles exactly those. (A dependency added to pyproject.toml without `make lock` fails here.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: lock file -> the extras it holds (what `make lock` compiles)
LOCK_EXTRAS = {"serve.lock": ("serve", "aws"), "train.lock": ("train", "aws"), "dev.lock": ("dev",)}
#: lock file -> its input file
LOCK_INPUTS = {
    "bootstrap.lock": "bootstrap.in",
    "build.lock": "build.in",
    "lite0.lock": "lite0.in",
    "kubectl.lock": "kubectl.in",
}
_ENTRY = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: ;[^\\\n]*)? \\\n((?:    --hash=sha256:[0-9a-f]{64}.*\n)+)", re.M
)


def pins(lock: Path) -> dict[str, set[Version]]:
    """Canonical name -> pinned versions (a universal lock may pin one name twice, under exclusive markers)."""
    text = lock.read_text()
    found: dict[str, set[Version]] = {}
    for name, version, _ in _ENTRY.findall(text):
        found.setdefault(canonicalize_name(name), set()).add(Version(version))
    assert len(_ENTRY.findall(text)) == len(re.findall(r"^[A-Za-z0-9][A-Za-z0-9._-]*==", text, re.M)), (
        f"{lock.name}: an entry without hashes"
    )
    return found


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The base dependencies plus those of ``extras``, self-references (``mri-classifier[serve]``) expanded."""
    own = canonicalize_name(PYPROJECT["name"])
    out: list[Requirement] = []
    todo, seen = list(extras), set()
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for raw in PYPROJECT["optional-dependencies"][extra]:
            req = Requirement(raw)
            if canonicalize_name(req.name) == own:
                todo += sorted(req.extras)
            else:
                reqs.append(req)
    out = [r for r in reqs if canonicalize_name(r.name) != own]
    return out


def disagreements(lock: Path, extras: tuple[str, ...]) -> list[str]:
    """What in pyproject.toml's ``extras`` the lock does not pin inside the allowed range."""
    pinned = pins(lock)
    problems = []
    for req in requirements(extras):
        versions = pinned.get(canonicalize_name(req.name))
        if not versions:
            problems.append(f"{req.name} is not in {lock.name}")
        elif not any(req.specifier.contains(v, prereleases=True) for v in versions):
            problems.append(f"{req.name}: {sorted(map(str, versions))} outside {req.specifier}")
    return problems


@pytest.mark.parametrize("lock", sorted(LOCK_EXTRAS))
def test_every_requirement_is_pinned_inside_its_range(lock: str) -> None:
    problems = disagreements(ROOT / "requirements" / lock, LOCK_EXTRAS[lock])
    assert not problems, f"pyproject.toml and requirements/{lock} disagree (run `make lock`): {problems}"


@pytest.mark.parametrize("lock", sorted(LOCK_EXTRAS))
def test_each_lock_was_compiled_from_its_extras(lock: str) -> None:
    header = (ROOT / "requirements" / lock).read_text().splitlines()[1]
    assert "--generate-hashes" in header and "--universal" in header and "pyproject.toml" in header
    assert re.findall(r"--extra (\S+)", header) == list(LOCK_EXTRAS[lock])
    makefile = (ROOT / "Makefile").read_text()
    extras = " ".join(f"--extra {e}" for e in LOCK_EXTRAS[lock])
    assert f"pyproject.toml {extras} -o requirements/{lock}" in makefile, "make lock compiles the same"


@pytest.mark.parametrize("lock", sorted(LOCK_INPUTS))
def test_input_files_are_locked(lock: str) -> None:
    pinned = pins(ROOT / "requirements" / lock)
    source = ROOT / "requirements" / LOCK_INPUTS[lock]
    for line in source.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            versions = pinned.get(canonicalize_name(req.name), set())
            assert any(req.specifier.contains(v) for v in versions), f"{req} not pinned in {lock}"
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\nlock:") : makefile.index("\naudit:")]
    assert lock.removesuffix(".lock") in target, "make lock compiles it"


def test_the_check_fails_on_a_lock_that_disagrees(tmp_path: Path) -> None:
    """The check itself can fail: a lock without one of serve's packages, and one pinned out of range."""
    lock = (ROOT / "requirements" / "serve.lock").read_text()
    missing = tmp_path / "missing.lock"
    missing.write_text(re.sub(r"^fastapi==.*\n(?:    .*\n)+", "", lock, count=1, flags=re.M))
    assert disagreements(missing, ("serve",)) == ["fastapi is not in missing.lock"]
    old = tmp_path / "old.lock"
    old.write_text(re.sub(r"^pydicom==\S+", "pydicom==2.4.4", lock, count=1, flags=re.M))
    assert disagreements(old, ("serve",)) == ["pydicom: ['2.4.4'] outside >=3.0"]


def test_the_installed_venv_matches_the_dev_lock() -> None:
    """What `make venv` installed is what dev.lock pins (a venv from open ranges would drift)."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = pins(ROOT / "requirements" / "dev.lock")
    mismatched = []
    for name in ("fastapi", "tensorflow-cpu", "numpy", "pydantic", "uvicorn", "openvino", "keras"):
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            continue
        if installed not in pinned.get(name, set()):
            mismatched.append(f"{name} {installed} (lock: {sorted(map(str, pinned.get(name, set())))})")
    assert not mismatched, mismatched


def test_the_installer_comes_from_its_own_lock_first() -> None:
    """Every venv gets pip from bootstrap.lock before any other lock (an interpreter's own pip may be too old), and
    the serving environment that `make run` builds installs no development lock."""
    makefile = (ROOT / "Makefile").read_text()
    serve = makefile[makefile.index("$(VENV)/.serve:") : makefile.index("$(VENV)/.installed:")]
    steps = [line.strip() for line in serve.splitlines()[1:] if line.startswith("\t")]
    assert "requirements/bootstrap.lock" in steps[1], steps
    assert all("dev.lock" not in step for step in steps)
    assert "requirements/serve.lock" in serve
    run = makefile[makefile.index("\nrun:") :].splitlines()[1]
    assert "serve-venv" in run and "venv " not in run.replace("serve-venv", "")
    assert pins(ROOT / "requirements" / "bootstrap.lock").keys() == {"pip"}
