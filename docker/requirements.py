"""Print the requirements of one of the project's extras, read from pyproject.toml, one per line.

The images install their dependencies from this list in a layer of their own, before the code is copied, so
editing code never re-downloads TensorFlow. Self-references (``mri-classifier[serve]``) are expanded;
``--exclude NAME`` drops a distribution (the GPU image takes TensorFlow from its base image).

    python3 docker/requirements.py serve pyproject.toml > requirements.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11 (a GPU base image's interpreter): pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(project: dict[str, Any], extra: str, exclude: set[str]) -> list[str]:
    """The base dependencies plus those of ``extra`` (recursively), minus excluded distributions."""
    own = _canonical(project["name"])
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    seen: set[str] = set()

    def add(reqs: list[str]) -> None:
        for req in reqs:
            match = _NAME.match(req)
            if match is None:
                raise ValueError(f"cannot parse requirement {req!r}")
            name = _canonical(match.group(1))
            if name == own:
                for sub in (match.group(2) or "[]").strip("[]").split(","):
                    if sub.strip() and sub.strip() not in seen:
                        seen.add(sub.strip())
                        add(extras[sub.strip()])
            elif name not in exclude and req not in out:
                out.append(req)

    add(list(project.get("dependencies", [])))
    if extra:
        seen.add(extra)
        add(extras[extra])
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extra", help="optional-dependencies group, e.g. serve or train ('' = base only)")
    parser.add_argument("pyproject", nargs="?", default="pyproject.toml")
    parser.add_argument("--exclude", action="append", default=[], help="distribution to leave out")
    args = parser.parse_args(argv)
    project = tomllib.loads(Path(args.pyproject).read_text())["project"]
    lines = requirements(project, args.extra, {_canonical(n) for n in args.exclude})
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
