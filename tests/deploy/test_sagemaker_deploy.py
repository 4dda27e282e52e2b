"""``mri-classifier sagemaker package|deploy|invoke|delete`` against moto's S3 and SageMaker (no AWS account).
The real container under the SageMaker SDK's local mode is ``make image-test``'s sagemaker phase."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from training import sagemaker_deploy as sd
from training.cli import main as cli_main

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mri-classifier:cpu-sagemaker"
MODEL_DATA = "s3://mri-models/releases/model.tar.gz"


def make_model(root: Path, versions: tuple[int, ...] = (1, 2)) -> Path:
    """A model folder in the exported layout (contents are stand-ins: packaging never loads them)."""
    for version in versions:
        folder = root / str(version)
        (folder / "variables").mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"graph-%d" % version)
        (folder / "variables" / "variables.index").write_bytes(b"index")
        (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights" * 100)
        (folder / "metadata.json").write_text(json.dumps({"version": version, "classes": ["glioma"]}))
    (root / ".tmp-3-abc").mkdir()  # an export in progress is never shipped
    return root


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    with mock_aws():
        yield


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run through the real entry point; (exit code, parsed stdout JSON or None, stderr)."""
    code = cli_main(["sagemaker", "--region", REGION, *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


# ------------------------------------------------------------------------------------------------ package
def test_package_ships_the_newest_version_at_the_archive_root(tmp_path: Path) -> None:
    model_dir = make_model(tmp_path / "model")
    pkg = sd.package_model(model_dir, tmp_path / "out" / "model.tar.gz")
    assert pkg.version == "2"
    with tarfile.open(pkg.path, "r:gz") as tar:
        names = tar.getnames()
        members = tar.getmembers()
    # SageMaker unpacks this into /opt/ml/model: the service then finds /opt/ml/model/2/saved_model.pb.
    assert names[0] == "2" and "2/saved_model.pb" in names and "2/variables/variables.index" in names
    assert "2/metadata.json" in names and not any(n.startswith(("1", ".tmp")) for n in names)
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
    assert all(m.mode == (0o755 if m.isdir() else 0o644) for m in members)
    assert pkg.sha256 == hashlib.sha256(pkg.path.read_bytes()).hexdigest()


def test_package_is_reproducible(tmp_path: Path) -> None:
    model_dir = make_model(tmp_path / "model")
    first = sd.package_model(model_dir, tmp_path / "a.tar.gz")
    (model_dir / "2" / "saved_model.pb").touch()  # a newer mtime changes nothing
    second = sd.package_model(model_dir, tmp_path / "b.tar.gz")
    assert first.sha256 == second.sha256


def test_package_a_chosen_version(tmp_path: Path) -> None:
    pkg = sd.package_model(make_model(tmp_path / "model"), tmp_path / "m.tar.gz", version="1")
    with tarfile.open(pkg.path, "r:gz") as tar:
        assert tar.extractfile("1/saved_model.pb").read() == b"graph-1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "no SavedModel version found"),
        (lambda root: (root / "4" / "variables").mkdir(parents=True), "no SavedModel version found"),
        (
            lambda root: (root / "4").mkdir(parents=True) or (root / "4" / "saved_model.pb").write_bytes(b"pb"),
            "missing variables, metadata.json",
        ),
    ],
    ids=["no-folder", "no-version", "being-copied", "incomplete"],
)
def test_package_refuses_what_is_not_a_complete_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: Any, message: str
) -> None:
    root = tmp_path / "model"
    setup(root)
    code, out, err = run_cli(capsys, "package", "--model-dir", str(root), "--output", str(tmp_path / "m.tar.gz"))
    assert code == 1 and out is None
    assert message in err and err.startswith("mri-classifier sagemaker package: ")
    assert not (tmp_path / "m.tar.gz").exists()


def test_package_and_upload_to_s3(tmp_path: Path, aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mri-models")
    out_path = tmp_path / "model.tar.gz"
    code, out, _ = run_cli(
        capsys,
        "package",
        "--model-dir",
        str(make_model(tmp_path / "m")),
        "--output",
        str(out_path),
        "--upload",
        "s3://mri-models/releases/",
    )
    assert code == 0
    assert out["s3_uri"] == MODEL_DATA and out["version"] == "2"
    body = s3.get_object(Bucket="mri-models", Key="releases/model.tar.gz")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == out["sha256"]


# ------------------------------------------------------------------------------------------------ deploy
def deploy_args(*extra: str) -> list[str]:
    return [
        "deploy",
        "--endpoint-name",
        "mri-classifier",
        "--image-uri",
        IMAGE,
        "--model-data",
        MODEL_DATA,
        "--role-arn",
        ROLE,
        *extra,
    ]


def test_deploy_creates_model_config_and_endpoint(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys,
        *deploy_args(
            "--instance-type",
            "ml.c5.xlarge",
            "--instance-count",
            "2",
            "--env",
            "MRI_MAX_BATCH_SIZE=16",
            "--wait",
        ),
    )
    assert code == 0, err
    assert out["action"] == "created" and out["status"] == "InService"
    sm = boto3.client("sagemaker", region_name=REGION)
    model = sm.describe_model(ModelName=out["model"])
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_DATA
    assert model["PrimaryContainer"]["Environment"] == {"MRI_MAX_BATCH_SIZE": "16"}
    assert model["ExecutionRoleArn"] == ROLE
    variant = sm.describe_endpoint_config(EndpointConfigName=out["endpoint_config"])["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 2)
    assert variant["ModelName"] == out["model"]
    endpoint = sm.describe_endpoint(EndpointName="mri-classifier")
    assert endpoint["EndpointConfigName"] == out["endpoint_config"]


class UpdateRecorder:
    """moto's SageMaker without UpdateEndpoint (moto has none): records the call instead."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.updates: list[dict[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def update_endpoint(self, **kwargs: str) -> None:
        self.updates.append(kwargs)


def test_deploy_again_updates_the_endpoint(aws: None) -> None:
    sm = UpdateRecorder(boto3.client("sagemaker", region_name=REGION))
    base: dict[str, Any] = {"endpoint_name": "mri-classifier", "image_uri": IMAGE, "model_data": MODEL_DATA}
    base["role_arn"] = ROLE
    first = sd.deploy(sm, sd.DeploySpec(**base, suffix="20250101-000000"))
    second = sd.deploy(sm, sd.DeploySpec(**base, suffix="20250102-000000", instance_count=3))
    assert (first["action"], second["action"]) == ("created", "updated")
    assert sm.updates == [{"EndpointName": "mri-classifier", "EndpointConfigName": second["endpoint_config"]}]
    config = sm.describe_endpoint_config(EndpointConfigName=second["endpoint_config"])
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 3
    assert len(sm.list_models()["Models"]) == 2, "the previous model stays until deleted (rollback)"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("--role-arn", "not-a-role"), "invalid execution role ARN"),
        (("--model-data", "https://example.com/model.tar.gz"), "not an S3 URI"),
        (("--model-data", "s3://bucket/model.zip"), "model.tar.gz"),
        (("--endpoint-name", "bad_name!"), "invalid endpoint name"),
        (("--instance-count", "0"), "at least 1"),
        (("--instance-type", "m5.large"), "start with ml."),
        (("--env", "NOVALUE"), "KEY=VALUE"),
    ],
)
def test_deploy_refuses_bad_arguments_before_calling_aws(
    aws: None, capsys: pytest.CaptureFixture[str], override: tuple[str, str], message: str
) -> None:
    args = deploy_args()
    if override[0] in args:
        args[args.index(override[0]) + 1] = override[1]
    else:
        args += list(override)
    code, out, err = run_cli(capsys, *args)
    assert code == 1 and out is None and message in err
    assert boto3.client("sagemaker", region_name=REGION).list_models()["Models"] == []


def test_resource_names_fit_sagemaker_limits() -> None:
    spec = sd.DeploySpec("e" * 63, IMAGE, MODEL_DATA, ROLE, suffix="20250101-000000")
    name = spec.resource_name()
    assert len(name) <= 63 and name.endswith("-20250101-000000")


def test_aws_errors_are_reported_not_raised(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "delete", "--endpoint-name", "missing")
    assert code == 1 and out is None
    assert "ClientError" in err and "missing" in err


# ------------------------------------------------------------------------------------------------ invoke
def test_invoke_sends_the_image_and_prints_the_answer(
    aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    answer = {"predictions": [{"label": "glioma", "confidence": 0.9}]}
    backend = sagemakerruntime_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.results_queue.append((json.dumps(answer), "application/json", "AllTraffic", ""))
    image = tmp_path / "scan.JPG"
    image.write_bytes(b"fake-jpeg")  # moto decodes request bodies as UTF-8; the bytes are not inspected
    code, out, err = run_cli(capsys, "invoke", "--endpoint-name", "mri-classifier", "--image", str(image))
    assert code == 0, err
    assert out == {"content_type": "application/json", "answer": answer}


class FakeRuntime:
    """Records what invoke_endpoint is called with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def invoke_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"ContentType": "application/json", "Body": io.BytesIO(b"{}")}


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.jpg", "image/jpeg"),
        ("a.jpeg", "image/jpeg"),
        ("a.PNG", "image/png"),
        ("a.dcm", "application/dicom"),
        ("a.bin", "application/octet-stream"),
    ],
)
def test_invoke_content_type_from_suffix(name: str, content_type: str) -> None:
    runtime = FakeRuntime()
    sd.invoke(runtime, "ep", b"x", sd.content_type_for(Path(name)), custom_attributes="trace=1")
    call = runtime.calls[0]
    assert call["ContentType"] == content_type and call["Accept"] == "application/json"
    assert call["CustomAttributes"] == "trace=1" and call["Body"] == b"x"


def test_invoke_refuses_payloads_sagemaker_would_reject() -> None:
    runtime = FakeRuntime()
    with pytest.raises(sd.DeployError, match="6 MB"):
        sd.invoke(runtime, "ep", b"x" * (sd.PAYLOAD_LIMIT_BYTES + 1), "image/png")
    with pytest.raises(sd.DeployError, match="empty"):
        sd.invoke(runtime, "ep", b"", "image/png")
    assert runtime.calls == []


# ------------------------------------------------------------------------------------------------ delete
def test_delete_removes_endpoint_config_and_model(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, deployed, _ = run_cli(capsys, *deploy_args())
    assert code == 0
    code, out, err = run_cli(capsys, "delete", "--endpoint-name", "mri-classifier")
    assert code == 0, err
    assert out["models"] == deployed["model"]
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []


# ------------------------------------------------------------------------------------------------ transform
def transform_args(*extra: str) -> list[str]:
    return [
        "transform",
        "--job-name",
        "mri-scans-2026-01",
        "--input",
        "s3://mri-scans/incoming/",
        "--output",
        "s3://mri-scans/predictions/",
        *extra,
    ]


def test_transform_creates_the_model_and_a_job_over_the_prefix(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ("--image-uri", IMAGE, "--model-data", MODEL_DATA, "--role-arn", ROLE, "--env", "MRI_MAX_BATCH_SIZE=16")
    code, out, err = run_cli(capsys, *transform_args(*extra, "--instance-count", "2", "--wait"))
    assert code == 0, err
    assert out == {
        "job": "mri-scans-2026-01",
        "model": "mri-scans-2026-01",
        "output": "s3://mri-scans/predictions/",
        "status": "Completed",
    }
    sm = boto3.client("sagemaker", region_name=REGION)
    model = sm.describe_model(ModelName="mri-scans-2026-01")
    assert model["PrimaryContainer"]["Image"] == IMAGE and model["PrimaryContainer"]["ModelDataUrl"] == MODEL_DATA
    assert model["PrimaryContainer"]["Environment"] == {"MRI_MAX_BATCH_SIZE": "16"}
    job = sm.describe_transform_job(TransformJobName="mri-scans-2026-01")
    source = job["TransformInput"]["DataSource"]["S3DataSource"]
    assert source == {"S3DataType": "S3Prefix", "S3Uri": "s3://mri-scans/incoming/"}
    # One image per request, as /invocations takes it; answers as JSON, one .out file per image.
    assert job["TransformInput"]["SplitType"] == "None" and job["BatchStrategy"] == "SingleRecord"
    assert job["TransformInput"]["ContentType"] == "application/x-image"
    assert job["TransformOutput"] == {
        "S3OutputPath": "s3://mri-scans/predictions/",
        "Accept": "application/json",
        "AssembleWith": "None",
    }
    assert job["MaxPayloadInMB"] == 6
    assert job["TransformResources"] == {"InstanceType": sd.DEFAULT_INSTANCE_TYPE, "InstanceCount": 2}


def test_transform_with_the_model_deploy_made(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, deployed, _ = run_cli(capsys, *deploy_args())
    assert code == 0
    code, out, err = run_cli(capsys, *transform_args("--model-name", deployed["model"], "--content-type", "image/png"))
    assert code == 0, err
    assert out["model"] == deployed["model"]
    sm = boto3.client("sagemaker", region_name=REGION)
    job = sm.describe_transform_job(TransformJobName="mri-scans-2026-01")
    assert job["ModelName"] == deployed["model"] and job["TransformInput"]["ContentType"] == "image/png"
    assert len(sm.list_models()["Models"]) == 1, "no second model is created"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "give --model-name"),
        (("--image-uri", IMAGE, "--model-data", MODEL_DATA, "--role-arn", "nope"), "invalid execution role ARN"),
        (("--model-name", "m", "--input", "mri-scans/incoming/"), "not an S3 URI"),
        (("--model-name", "m", "--instance-type", "c5.xlarge"), "start with ml."),
        (("--model-name", "m", "--content-type", "text/csv"), "unsupported content type"),
        (("--model-name", "bad_name!"), "invalid model name"),
    ],
)
def test_transform_refuses_bad_arguments_before_calling_aws(
    aws: None, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], message: str
) -> None:
    args = transform_args()
    extra_list = list(extra)
    if "--input" in extra_list:
        position = extra_list.index("--input")
        args[args.index("--input") + 1] = extra_list[position + 1]
        del extra_list[position : position + 2]
    code, out, err = run_cli(capsys, *args, *extra_list)
    assert code == 1 and out is None and message in err
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_transform_jobs()["TransformJobSummaries"] == [] and sm.list_models()["Models"] == []
