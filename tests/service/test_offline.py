"""Telemetry is blocked in every process that runs the project's code, before OpenVINO is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import {entry}
import openvino.tools.ovc.convert_impl as convert_impl
import openvino.tools.ovc.telemetry_utils as telemetry_utils
assert sys.modules["openvino_telemetry"] is None, "telemetry importable"
assert convert_impl.tm.__name__ == "openvino.tools.ovc.telemetry_stub", convert_impl.tm.__name__
assert telemetry_utils.tm.__name__ == "openvino.tools.ovc.telemetry_stub", telemetry_utils.tm.__name__
print("blocked")
"""


ENTRY_POINTS = [
    "service.app",
    "service.inference.runtime",
    "training.cli",
    "training.evaluate",
    "benchmarks.bench_service",
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_openvino_uses_its_no_op_stub_after_importing(entry: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(entry=entry)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("blocked")


def test_already_imported_telemetry_is_silenced() -> None:
    """A process that imported the telemetry package before ours: its backends' send becomes a no-op."""
    code = """
import openvino_telemetry.backend.backend_ga4 as ga4
import service
assert ga4.GA4Backend.send(None, {"x": 1}) is None
assert ga4.GA4Backend.send.__name__ == "_drop"
print("silenced")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "silenced" in result.stdout
