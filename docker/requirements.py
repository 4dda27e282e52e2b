"""Print a hashed lock file without some of its packages (their hashes included), for ``pip install
--require-hashes``. The GPU images take TensorFlow from their base image, so they drop it from the lock:

    python3 docker/requirements.py requirements/serve.lock --exclude tensorflow --exclude tensorflow-cpu

Standard library only (it runs in the GPU base image before anything is installed).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def without(lock_text: str, exclude: set[str]) -> str:
    """``lock_text`` minus the entries (a ``name==version`` line and its continuation lines) of ``exclude``."""
    out: list[str] = []
    skipping = False
    for line in lock_text.splitlines():
        match = _ENTRY.match(line)
        if match:
            skipping = canonical(match.group(1)) in exclude
        elif not line.startswith((" ", "\t")):
            skipping = False  # a comment or blank line ends an entry
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path, help="a hashed lock file (requirements/*.lock)")
    parser.add_argument("--exclude", action="append", default=[], help="distribution to leave out")
    args = parser.parse_args(argv)
    sys.stdout.write(without(args.lock.read_text(), {canonical(n) for n in args.exclude}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
