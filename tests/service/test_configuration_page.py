"""docs/configuration.md lists every setting of ``service.config.Settings`` and of its sibling
``DicomNodeSettings`` (``mri-classifier dicom-node``), no other, with its default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from service.config import DicomNodeSettings, Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
#: (prefix, settings class) of every table on the page
CLASSES = (("MRI_", Settings), ("MRI_DICOM_NODE_", DicomNodeSettings))
ROW = re.compile(r"^\| `(MRI_[A-Z0-9_]+)` \| `([^`]*)` \| (.+) \|$", re.M)


def shown(field: Any) -> str:
    """A default as the page writes it: the environment's spelling."""
    if field.default_factory is not None:
        value = field.default_factory()
        return "(empty)" if not value else str(value)
    value = field.default
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_every_setting_is_documented_with_its_default() -> None:
    rows = {name: default for name, default, _ in ROW.findall(PAGE.read_text())}
    expected = {
        f"{prefix}{name.upper()}": shown(field) for prefix, cls in CLASSES for name, field in cls.model_fields.items()
    }
    assert set(rows) == set(expected), (
        f"undocumented: {sorted(set(expected) - set(rows))}; not settings: {sorted(set(rows) - set(expected))}"
    )
    wrong = {name: (rows[name], default) for name, default in expected.items() if rows[name] != default}
    assert not wrong, f"defaults on the page vs Settings: {wrong}"


def test_the_check_sees_a_missing_row() -> None:
    text = PAGE.read_text()
    assert ROW.search(text) is not None
    without = ROW.sub("", text, count=1)
    assert len(ROW.findall(without)) == sum(len(cls.model_fields) for _, cls in CLASSES) - 1
