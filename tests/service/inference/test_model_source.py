"""The image's built-in model: served only when nothing was configured, or, asked for by name, while a model
store holds no version yet; a configured model that fails never falls back to it; ``/readyz`` says which model
is served and from where."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.inference import model_source
from tests.service.conftest import make_settings


def at_default(model_dir: Path, builtin: Path | None, **overrides: Any) -> Settings:
    """Settings whose ``model_dir`` is the default one (not set by the user), pointing at ``model_dir``: what
    ``/opt/ml/model`` is in the images."""
    base = make_settings(model_dir, builtin_model_dir=builtin, **overrides)
    values = {name: getattr(base, name) for name in Settings.model_fields}
    return Settings.model_construct(_fields_set=set(base.model_fields_set) - {"model_dir"}, **values)


def test_an_empty_default_folder_serves_the_built_in_model(tmp_path: Path, model_root: Path) -> None:
    empty = tmp_path / "opt-ml-model"
    (empty / "lost+found").mkdir(parents=True)  # a fresh ext4 volume
    (empty / ".keep").touch()
    chosen = model_source.choose(at_default(empty, model_root))
    assert chosen.model_dir == model_root
    assert model_source.describe(chosen) == model_source.ModelSource("built-in", model_root)
    # A folder that does not exist is empty too (SageMaker without model data, an image without the folder).
    assert model_source.choose(at_default(tmp_path / "missing", model_root)).model_dir == model_root


def test_anything_in_the_default_folder_is_the_configured_model(tmp_path: Path, model_root: Path) -> None:
    placed = tmp_path / "opt-ml-model"
    (placed / "junk").mkdir(parents=True)  # not a model: it must fail, not be replaced by the built-in one
    chosen = model_source.choose(at_default(placed, model_root))
    assert chosen.model_dir == placed
    assert model_source.describe(chosen).origin == "configured"


def test_a_model_dir_set_explicitly_never_falls_back(
    tmp_path: Path, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MRI_MODEL_DIR", str(tmp_path / "typo"))
    monkeypatch.setenv("MRI_BUILTIN_MODEL_DIR", str(model_root))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert model_source.choose(settings).model_dir == tmp_path / "typo"
    # Without a built-in model (outside the images) nothing changes either.
    assert model_source.choose(at_default(tmp_path / "missing", None)).model_dir == tmp_path / "missing"


def test_the_default_host_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MRI_HOST", raising=False)
    assert Settings(_env_file=None).host == "127.0.0.1"  # type: ignore[call-arg]
    monkeypatch.setenv("MRI_HOST", "0.0.0.0")
    assert Settings(_env_file=None).host == "0.0.0.0"  # type: ignore[call-arg]


def test_readyz_names_the_built_in_model(
    tmp_path: Path, model_root: Path, open_client: Callable[..., TestClient]
) -> None:
    client = open_client(model_source.choose(at_default(tmp_path / "empty", model_root)))
    body = _wait_ready(client)
    assert body["status"] == "ready" and body["model"]["version"] == 1
    assert body["source"] == {"origin": "built-in", "model_dir": str(model_root)}


def test_a_broken_configured_model_stays_not_ready_instead_of_falling_back(
    tmp_path: Path, model_root: Path, mismatched_root: Path, open_client: Callable[..., TestClient]
) -> None:
    placed = tmp_path / "opt-ml-model"
    shutil.copytree(mismatched_root, placed)  # what a user mounted: classes in another order
    client = open_client(model_source.choose(at_default(placed, model_root)))
    body = _wait_ready(client, until=("failed",))
    assert body["status"] == "failed" and "class order mismatch" in body["reason"]
    assert body["source"] == {"origin": "configured", "model_dir": str(placed)}
    assert client.get("/ping").status_code == 503


def test_a_model_store_serves_the_built_in_model_until_a_trained_version_appears(
    tmp_path: Path, model_root: Path, open_client: Callable[..., TestClient]
) -> None:
    """MRI_BUILTIN_MODEL_UNTIL_TRAINED (the KServe overlay): ready at once on the built-in model while the store is
    empty, then the store's first version replaces it, with no moment of not being ready."""
    store = tmp_path / "mnt-models"
    (store / "lost+found").mkdir(parents=True)  # a fresh claim
    settings = make_settings(
        store, builtin_model_dir=model_root, builtin_model_until_trained=True, model_poll_interval_s=0.1
    )
    assert model_source.choose(settings) == settings, "the store stays the folder watched"
    client = open_client(settings)
    body = _wait_ready(client)
    assert body["status"] == "ready"
    assert body["source"] == {"origin": "built-in", "model_dir": str(model_root), "waiting_for": str(store)}
    shutil.copytree(model_root / "1", tmp_path / "staging")  # the training job's export, moved in whole
    (tmp_path / "staging").rename(store / "2")
    import time

    deadline = time.monotonic() + 120
    while (body := client.get("/readyz").json())["source"]["origin"] == "built-in":
        assert body["status"] == "ready", "the built-in model serves until the new one is warm"
        assert time.monotonic() < deadline, "the trained version was never loaded"
        time.sleep(0.05)
    assert body["status"] == "ready"
    assert body["source"] == {"origin": "configured", "model_dir": str(store)}
    assert client.get("/ping").status_code == 200


def test_a_version_in_the_store_at_start_never_falls_back(
    tmp_path: Path, model_root: Path, mismatched_root: Path, open_client: Callable[..., TestClient]
) -> None:
    store = tmp_path / "mnt-models"
    shutil.copytree(mismatched_root, store)  # a trained version, broken: not ready, not the built-in instead
    settings = make_settings(store, builtin_model_dir=model_root, builtin_model_until_trained=True)
    assert model_source.until_trained(settings) is None
    body = _wait_ready(open_client(settings), until=("failed",))
    assert "class order mismatch" in body["reason"]
    assert body["source"] == {"origin": "configured", "model_dir": str(store)}


def test_until_trained_needs_a_built_in_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MRI_BUILTIN_MODEL_UNTIL_TRAINED needs MRI_BUILTIN_MODEL_DIR"):
        make_settings(tmp_path, builtin_model_until_trained=True)
    assert not make_settings(tmp_path).builtin_model_until_trained, "off unless asked for"


def _wait_ready(client: TestClient, until: tuple[str, ...] = ("ready", "failed"), timeout: float = 120) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/readyz").json()
        if body["status"] in until:
            return body
        time.sleep(0.05)
    raise AssertionError(f"not {until} after {timeout} s: {body}")
