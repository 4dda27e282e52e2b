"""docker-compose.yml, Prometheus and Grafana: validated by docker-compose itself, then checked for what the
deployment promises (read-only model, hardened api, training under a profile, dashboards on real metrics).
Bringing it up for real is ``make image-test``'s compose phase."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from tests.deploy.conftest import ROOT, require_tool, run_tool

COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "mri-classifier.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def volume(spec: str | dict[str, Any]) -> tuple[str, str, str]:
    """(source, target, mode) of a short- or long-syntax volume, ``${VAR:-default}`` read as the default."""
    if isinstance(spec, dict):
        return spec.get("source", ""), spec["target"], "ro" if spec.get("read_only") else "rw"
    parts = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", spec).split(":")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"


def _compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MRI_", "MODEL_SOURCE", "TRAIN_"))}
    return {**env, **extra}


@pytest.mark.parametrize(
    "extra",
    [{}, {"MODEL_SOURCE": "./models/mri-classifier", "API_PORT": "9000", "TRAIN_DATA": "/data/Training"}],
    ids=["defaults", "overrides"],
)
def test_docker_compose_validates_the_file(extra: dict[str, str]) -> None:
    tool = require_tool("docker-compose", "apt-get install docker-compose (make deploy-tools does)")
    result = run_tool(tool, "-f", str(COMPOSE), "--profile", "train", "config", env=_compose_env(**extra))
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) == {"api", "train", "dicom-node", "prometheus", "grafana"}
    mounts = {target: (source, mode) for source, target, mode in map(volume, rendered["services"]["api"]["volumes"])}
    source, mode = mounts["/opt/ml/model"]
    assert mode == "ro"
    if "MODEL_SOURCE" in extra:
        assert source.startswith("/") and source.endswith("models/mri-classifier"), "a bind mount"
    else:
        assert source == "models", "the named volume train writes"


def test_api_is_hardened_and_serves_the_model_read_only(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["build"]["target"] == "service-cpu"
    assert api["read_only"] is True and "/tmp" in api["tmpfs"]
    assert api["cap_drop"] == ["ALL"] and "no-new-privileges:true" in api["security_opt"]
    assert "${MODEL_SOURCE:-models}:/opt/ml/model:ro" in api["volumes"]
    assert all(p.startswith("${API_BIND:-127.0.0.1}") for p in api["ports"]), "loopback unless asked"
    grace = int(str(api["stop_grace_period"]).rstrip("s"))
    assert 25 < grace <= 30, "SageMaker's 30 s; the service drains in 25"


def test_plain_up_serves_the_built_in_model(compose: dict[str, Any]) -> None:
    """``docker compose up -d`` with nothing set: the models volume is new and empty, MRI_MODEL_DIR is unset, so
    the image's built-in model is served (service/inference/model_source.py); make image-test brings it up for real."""
    api = compose["services"]["api"]
    assert "MRI_MODEL_DIR" not in api.get("environment", {}), "set, it would turn the built-in model off"
    assert api["build"] == {**api["build"], "dockerfile": "docker/Dockerfile", "target": "service-cpu"}
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "ENV MRI_BUILTIN_MODEL_DIR=/opt/mri-classifier/model" in dockerfile


def test_train_runs_under_a_profile_and_writes_the_volume_api_reads(compose: dict[str, Any]) -> None:
    train = compose["services"]["train"]
    assert train["profiles"] == ["train"]
    assert train["build"]["target"] == "train" and train["command"] == ["train"]
    mounts = {target: (source, mode) for source, target, mode in map(volume, train["volumes"])}
    assert mounts["/opt/ml/model"] == ("models", "rw"), "train writes the models volume"
    assert mounts["/opt/ml/input/data/train"][1] == "ro"
    assert mounts["/opt/ml/input/config/hyperparameters.json"] == ("./docker/train-overrides.json", "ro")
    assert "models" in compose["volumes"]
    overrides = json.loads((ROOT / "docker" / "train-overrides.json").read_text())
    assert overrides == {}, "no override: the recipe (training/recipe.json), as `train` with no options"


def test_prometheus_scrapes_the_api(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert "./docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "mri-classifier")
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8080"]


def test_grafana_is_provisioned(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {target: source for source, target, _ in map(volume, grafana["volumes"])}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    dashboards = ROOT / mounts["/var/lib/grafana/dashboards"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards" / "mri-classifier.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert (dashboards / DASHBOARD.name).is_file()
    assert grafana["environment"]["GF_ANALYTICS_REPORTING_ENABLED"] == "false", "air-gapped: no phoning home"
    uids = {p["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert uids == {datasource["uid"]}


def _exposed_metric_names() -> set[str]:
    """Every sample name service/metrics.py exposes (counters as _total, histograms with their series)."""
    import service.metrics as metrics

    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(value._name + "_total")
        elif isinstance(value, Histogram):
            names.update(value._name + s for s in ("_bucket", "_sum", "_count"))
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def test_dashboard_uses_only_metrics_the_service_exposes() -> None:
    exposed = _exposed_metric_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bmri_[a-z_]+", e)}
    assert used, "the dashboard queries mri_ metrics"
    assert used <= exposed, f"unknown metrics: {sorted(used - exposed)}"


def test_dashboard_shows_rate_latency_batch_size_and_classes() -> None:
    panels = {
        p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in json.loads(DASHBOARD.read_text())["panels"]
    }
    wanted = {
        "request rate": r"rate\(mri_requests_total",
        "latency percentiles": r"histogram_quantile\(0\.99, .*mri_request_duration_seconds_bucket",
        "batch size": r"mri_batch_size_(sum|bucket)",
        "predictions by class": r"sum by \(label\) \(rate\(mri_predictions_total",
    }
    for what, pattern in wanted.items():
        assert any(re.search(pattern, expr) for expr in panels.values()), what


def test_prometheus_stand_in_keeps_the_official_image_interface() -> None:
    text = (ROOT / "docker" / "prometheus.Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/prometheus"]' in text and "/prometheus" in text
    compose_text = COMPOSE.read_text()
    assert "${PROMETHEUS_IMAGE:-prom/prometheus:" in compose_text, "the stand-in is swapped in by variable"


def test_compose_file_paths_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for spec in service.get("volumes", []):
            source = volume(spec)[0]
            if source.startswith("./") and source != "./data/train":  # TRAIN_DATA's default is the user's
                assert (ROOT / source).exists(), source
    assert Path(ROOT / "docker" / "train-overrides.json").is_file()


GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"


def test_gpu_override_reserves_a_gpu_for_the_gpu_images() -> None:
    """``docker compose -f docker-compose.yml -f docker-compose.gpu.yml``: api and train on the GPU targets, each
    with one NVIDIA GPU reserved; everything else of the api (hardening, read-only model) as without it."""
    from service.config import Settings

    tool = require_tool("docker-compose", "apt-get install docker-compose (make deploy-tools does)")
    result = run_tool(
        tool, "-f", str(COMPOSE), "-f", str(GPU_OVERRIDE), "--profile", "train", "config", env=_compose_env()
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name, target in (("api", "service-gpu"), ("train", "train-gpu")):
        service = services[name]
        assert service["build"]["target"] == target and service["build"]["dockerfile"] == "docker/Dockerfile"
        assert service["image"].endswith(":gpu")
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    env = services["api"]["environment"]
    assert (env["MRI_GPU_MEMORY_GROWTH"], env["MRI_GPU_MEMORY_LIMIT_MB"]) == ("true", "0"), "the documented defaults"
    assert not [k for k in env if k.startswith("TF_")], "nothing that overrides the service's GPU settings"
    Settings(_env_file=None, **{k.removeprefix("MRI_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    mounts = {target: mode for _, target, mode in map(volume, services["api"]["volumes"])}
    assert mounts["/opt/ml/model"] == "ro"
    assert "deploy" not in yaml.safe_load(COMPOSE.read_text())["services"]["api"], "the CPU file reserves nothing"
