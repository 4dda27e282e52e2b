"""The class contract: canonical names, order and folder-name aliases."""

from __future__ import annotations

import pytest

from service.labels import CLASSES, UnknownLabelError, canonical_label, label_index


def test_order_is_fixed():
    assert CLASSES == ("glioma", "meningioma", "no_tumor", "pituitary")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("glioma_tumor", "glioma"),
        ("Glioma", "glioma"),
        ("meningioma_tumor", "meningioma"),
        ("notumor", "no_tumor"),
        ("no_tumor", "no_tumor"),
        ("No Tumour", "no_tumor"),
        ("no-tumor", "no_tumor"),
        ("pituitary_tumor", "pituitary"),
        (" PITUITARY ", "pituitary"),
    ],
)
def test_aliases(name, expected):
    assert canonical_label(name) == expected


@pytest.mark.parametrize("name", ["astrocytoma", "", "tumor", "glioma2"])
def test_unknown_names_are_refused(name):
    with pytest.raises(UnknownLabelError):
        canonical_label(name)


def test_label_index_follows_the_order():
    assert [label_index(c) for c in ("glioma_tumor", "meningioma", "notumor", "pituitary_tumor")] == [
        0,
        1,
        2,
        3,
    ]
