"""Keep third-party libraries from calling out: a medical service never phones home.

OpenVINO's model conversion sends usage telemetry through the ``openvino-telemetry`` package, on by default
when no consent file exists: each event forks a process that resolves and connects to an analytics host (and
the forked children inherit the server's listening socket). ``block_telemetry()`` makes that package
unimportable in this process, so OpenVINO falls back to its built-in no-op stub, and silences it where
something imported it already. ``service/__init__.py`` calls it, so every process that runs this project's
code (the server, training, evaluation, benchmarks, the images) is covered before OpenVINO is imported.
"""

from __future__ import annotations

import sys
from typing import Any

#: Packages that send usage data and are never needed for the product to work.
TELEMETRY_PACKAGES = ("openvino_telemetry",)


def _silence(package: str) -> None:
    """Turn sending into a no-op in an already-imported telemetry package (its backends' ``send``)."""
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(f"{package}.backend"):
            continue
        for value in vars(module).values():
            if isinstance(value, type) and callable(getattr(value, "send", None)):
                value.send = _drop  # type: ignore[attr-defined]


def _drop(*args: Any, **kwargs: Any) -> None:
    """A telemetry event, dropped."""


def block_telemetry() -> None:
    """Make the telemetry packages unimportable (``ImportError``) and silence any already imported."""
    for package in TELEMETRY_PACKAGES:
        if sys.modules.get(package) is not None:
            _silence(package)
        sys.modules[package] = None  # type: ignore[assignment]
