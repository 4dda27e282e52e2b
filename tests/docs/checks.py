"""Checks that keep the Markdown pages true to the code. Each takes text (or paths) and returns the problems it
found, as short strings, so that the tests can apply it to the repository's pages and to planted bad pages."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
#: The user-facing pages: the top-level Markdown files and every page under docs/, k8s/, docker/, benchmarks/.
PAGE_ROOTS = ("docs", "k8s", "docker", "benchmarks")

_FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)[^\n]*\n(.*?)^\1\s*$", re.M | re.S)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""<(?:a|img)\s[^>]*?(?:href|src)=["']([^"']+)["']""", re.I)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console-free"}


def pages(root: Path = ROOT) -> list[Path]:
    """Every Markdown page a user reads."""
    found = sorted(root.glob("*.md"))
    for folder in PAGE_ROOTS:
        found += sorted(p for p in (root / folder).rglob("*.md") if ".venv" not in p.parts)
    return found


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language tag and body."""

    language: str
    body: str


def code_blocks(text: str) -> list[Block]:
    return [Block(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (where links live)."""
    return _INLINE_CODE.sub(" ", _FENCE.sub("\n", text))


def code_text(text: str) -> list[str]:
    """Fenced blocks' bodies and inline code spans (where commands, flags and setting names are quoted)."""
    without_fences = _FENCE.sub("\n", text)
    return [b.body for b in code_blocks(text)] + [m.group(2) for m in _INLINE_CODE.finditer(without_fences)]


# -- links and anchors -------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page has: its headings' slugs (repeats numbered -1, -2, as GitHub does) and explicit ids."""
    seen: dict[str, int] = {}
    out = set()
    for match in _HEADING.finditer(_FENCE.sub("\n", text)):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    out.update(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", text))
    return out


def link_problems(page: Path, text: str | None = None) -> list[str]:
    """Relative links whose file does not exist, and anchors (``#...``) that the target page lacks."""
    text = page.read_text() if text is None else text
    problems = []
    body = prose(text)
    targets = [m.group(1) for m in _LINK.finditer(body)] + [m.group(1) for m in _HTML_LINK.finditer(body)]
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http(s), mailto: not checked offline
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{page.name}: link to {target}: no such file")
            continue
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
            problems.append(f"{page.name}: link to {target}: no heading with that anchor in {dest.name}")
    return problems


# -- make targets ------------------------------------------------------------------------------------------------

_MAKE_CALL = re.compile(r"(?:^|[\s;&|(`$])make\s+((?:-\S+\s+|[A-Z_][A-Z0-9_]*=\S*\s+)*)([a-z][\w.-]*)", re.M)


def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    """The targets the Makefile defines (rules and .PHONY names)."""
    text = makefile.read_text()
    targets = set()
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.$()/ -]+?)\s*::?(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(t for t in match.group(1).split() if not t.startswith("$"))
        if line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
    return targets


def make_problems(text: str, targets: set[str], where: str = "") -> list[str]:
    """``make <target>`` in code that the Makefile does not define."""
    found = {m.group(2) for chunk in code_text(text) for m in _MAKE_CALL.finditer(chunk)}
    return [f"{where}: `make {t}`: no such target in the Makefile" for t in sorted(found - targets)]


# -- MRI_* names -------------------------------------------------------------------------------------------------

_MRI_NAME = re.compile(r"\bMRI_[A-Z0-9_]*[A-Z0-9]\b")


def names_in_code(root: Path = ROOT) -> set[str]:
    """``MRI_*`` names that the code uses: every setting (``MRI_`` + field) and each name in a non-Markdown file
    of the project (service, training, tests, benchmarks, docker, k8s, the Makefile)."""
    from service.config import DicomNodeSettings, Settings

    names = {
        f"{cls.model_config.get('env_prefix', '')}{field}".upper()
        for cls in (Settings, DicomNodeSettings)
        for field in cls.model_fields
    }
    files = [root / "Makefile", root / "docker-compose.yml"]
    for folder in ("service", "training", "tests", "benchmarks", "docker", "k8s", ".ci"):
        files += [p for p in (root / folder).rglob("*") if p.is_file() and p.suffix not in (".md", ".png", ".pb")]
    for path in files:
        if path.is_file() and "docs" not in path.relative_to(root).parts:
            try:
                names.update(_MRI_NAME.findall(path.read_text(errors="ignore")))
            except OSError:
                continue
    return names


def name_problems(text: str, known: set[str], where: str = "") -> list[str]:
    return [f"{where}: {n}: no such setting or variable" for n in sorted(set(_MRI_NAME.findall(text)) - known)]


# -- CLI flags ---------------------------------------------------------------------------------------------------

_COMMAND_NAMES = (*COMMANDS, "sample-image")
_SAGEMAKER_VERBS = ("package", "deploy", "invoke", "delete", "transform")


def commands_with_flags(text: str) -> Iterator[tuple[tuple[str, ...], set[str]]]:
    """``(command path, flags)`` for each ``mri-classifier <cmd> ...`` invocation quoted in code: the flags
    that follow it on the same logical line (backslash continuations joined)."""
    for chunk in code_text(text):
        joined = re.sub(r"\\\n", " ", chunk)
        for line in joined.splitlines():
            for match in re.finditer(r"mri-classifier\s+([a-z][\w-]*)((?:\s+[a-z][\w-]*)?)([^|;&<>]*)", line):
                command = match.group(1)
                if command not in _COMMAND_NAMES:
                    continue
                path: tuple[str, ...] = (command,)
                verb = match.group(2).strip()
                if command == "sagemaker" and verb in _SAGEMAKER_VERBS:
                    path = (command, verb)
                flags = set(re.findall(r"(?:^|\s)(--[a-z][\w-]*)", match.group(3)))
                yield path, flags


def cli_help(path: tuple[str, ...]) -> str:
    """The ``--help`` text of ``mri-classifier <path>``, from the installed command."""
    from tests.processes import serve_command

    command = [*serve_command(), *path, "--help"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    return done.stdout + done.stderr


def flag_problems(invocations: Iterable[tuple[tuple[str, ...], set[str]]], help_of: Any, where: str = "") -> list[str]:
    """Flags quoted after ``mri-classifier <cmd>`` that the command's ``--help`` does not list; unknown commands."""
    problems = []
    for path, flags in invocations:
        text = help_of(path)
        if "usage:" not in text:
            problems.append(f"{where}: `mri-classifier {' '.join(path)}`: no such command")
            continue
        known = set(re.findall(r"(--[a-z][\w-]*)", text))
        problems += [
            f"{where}: `mri-classifier {' '.join(path)} {flag}`: no such flag" for flag in sorted(flags - known)
        ]
    return problems


# -- shell blocks ------------------------------------------------------------------------------------------------


def shell_problems(text: str, where: str = "") -> list[str]:
    """Shell blocks that ``bash -n`` rejects, and backslashes followed by spaces or a comment (the next line would
    run as a command of its own)."""
    problems = []
    for block in code_blocks(text):
        if block.language not in SHELL_LANGUAGES:
            continue
        for number, line in enumerate(block.body.splitlines(), 1):
            if re.search(r"\\[ \t]+(#.*)?$", line):
                problems.append(f"{where}: shell block line {number}: text after a line-continuing backslash")
        done = subprocess.run(["bash", "-n"], input=block.body, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            problems.append(f"{where}: shell block does not parse: {done.stderr.strip()}")
    return problems


# -- example answers ---------------------------------------------------------------------------------------------


def json_examples(text: str) -> list[str]:
    return [b.body for b in code_blocks(text) if b.language == "json"]


def keys_of(example: str) -> set[str]:
    """The field names an example shows (examples elide with ``...``, so they are read as text, not JSON)."""
    return set(re.findall(r'"([A-Za-z_][\w]*)"\s*:', example))


def all_keys(value: Any) -> set[str]:
    """Every key at any depth of a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


def example_problems(
    example: str,
    live: dict[str, Any],
    classes: Iterable[str],
    version: int,
    required: Iterable[str] = (),
    where: str = "",
) -> list[str]:
    """A documented answer against a live one: every field it shows exists in the live answer, the ``required``
    fields are shown, each class it names is one of the model's, and its ``model_version`` is the shipped
    model's."""
    shown = keys_of(example)
    problems = [f"{where}: example field {k!r} is not in the service's answer" for k in sorted(shown - all_keys(live))]
    problems += [f"{where}: example lacks the answer's field {k!r}" for k in sorted(set(required) - shown)]
    classes = set(classes)
    named = set(re.findall(r'"(?:label|class_name)"\s*:\s*"([^"]*)"', example))
    for probabilities in re.findall(r'"probabilities"\s*:\s*\{([^}]*)\}', example):
        named |= set(re.findall(r'"([^"]+)"\s*:', probabilities))
    problems += [f"{where}: example class {c!r} is not one of {sorted(classes)}" for c in sorted(named - classes)]
    for shown in re.findall(r'"model_version"\s*:\s*"?(\d+)', example):
        if int(shown) != version:
            problems.append(f"{where}: example model_version {shown}, the shipped model is version {version}")
    return problems
