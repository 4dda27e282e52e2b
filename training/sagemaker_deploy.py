"""``mri-classifier sagemaker``: package a model for SageMaker, deploy an endpoint, invoke it, delete it, and
run Batch Transform jobs.

* ``package``: ``<model_dir>/<version>/`` -> a reproducible ``model.tar.gz`` holding ``<version>/...``,
  which SageMaker unpacks into ``/opt/ml/model`` (the service's default model folder); ``--upload s3://...``
  copies it to S3.
* ``deploy``: creates a model (image URI + S3 model data + role), an endpoint configuration (instance type
  and count) and the endpoint, or updates the endpoint when it exists. It pushes nothing: the image must
  already be in ECR and the model data in S3.
* ``invoke``: sends one image (JPEG, PNG or DICOM bytes, as the service accepts them) and prints the answer.
* ``delete``: removes the endpoint, its configuration and its model.
* ``transform``: starts a Batch Transform job over an S3 prefix of images (one request per file, the same
  ``/invocations`` as an endpoint); each answer lands beside the others as ``<file>.out`` under ``--output``.
  It uses an existing model (``--model-name``, e.g. the one ``deploy`` made) or creates one from
  ``--image-uri``, ``--model-data`` and ``--role-arn``.

Needs ``boto3`` (``pip install 'mri-classifier[aws]'``) and AWS credentials from the usual chain.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import re
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.inference.runtime import ModelLoadError
from service.inference.versions import find_version_dir

PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024  # SageMaker real-time endpoints refuse bigger requests
DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
VARIANT_NAME = "AllTraffic"
_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
_S3_RE = re.compile(r"^s3://([^/]+)/(.+)$")
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".dcm": "application/dicom",
}


class DeployError(Exception):
    """A problem the user can fix (bad argument, missing file, refused AWS call); the message says which."""


# --------------------------------------------------------------------------------------------------- package
@dataclasses.dataclass(frozen=True)
class Package:
    """What ``package`` wrote."""

    path: Path
    version: str
    sha256: str
    size: int
    members: int


def find_version(model_dir: Path, version: str | None = None) -> Path:
    """The version folder to ship: ``version``, else the highest numbered one; checked to be complete."""
    if not model_dir.is_dir():
        raise DeployError(f"model folder {model_dir} does not exist")
    if version is None:
        try:  # the service's definition of the newest version: the highest one holding a SavedModel
            chosen = find_version_dir(model_dir)
        except ModelLoadError as exc:
            raise DeployError(f"{exc.reason} in {model_dir} (expected <model_dir>/<version>/)") from None
        if chosen == model_dir:
            raise DeployError(f"{model_dir} is a SavedModel, not a versioned folder (expected <model_dir>/<version>/)")
    else:
        chosen = model_dir / version
    missing = [name for name in ("saved_model.pb", "variables", "metadata.json") if not (chosen / name).exists()]
    if missing:
        raise DeployError(f"{chosen} is not a complete exported model: missing {', '.join(missing)}")
    return chosen


def _walk(root: Path) -> Iterator[Path]:
    """Every file and folder under ``root``, in a stable order."""
    for path in sorted(root.rglob("*")):
        if not path.is_symlink():
            yield path


def package_model(model_dir: Path, output: Path, version: str | None = None) -> Package:
    """Write ``output`` (a gzip tarball of ``<version>/...``) reproducibly: fixed times, owners, modes."""
    chosen = find_version(model_dir, version)
    output.parent.mkdir(parents=True, exist_ok=True)
    members = 0
    tmp = output.with_name(output.name + ".tmp")
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in [chosen, *_walk(chosen)]:
            info = tar.gettarinfo(str(path), arcname=str(Path(chosen.name) / path.relative_to(chosen)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isfile():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
            members += 1
    tmp.replace(output)
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    return Package(output, chosen.name, digest, output.stat().st_size, members)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    match = _S3_RE.match(uri)
    if match is None:
        raise DeployError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    return match.group(1), match.group(2)


def upload(s3: Any, path: Path, uri: str) -> str:
    """Copy ``path`` to ``uri`` with an S3 client; returns the URI."""
    bucket, key = split_s3_uri(uri)
    if key.endswith("/"):
        key += path.name
    s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


# --------------------------------------------------------------------------------------------------- deploy
@dataclasses.dataclass(frozen=True)
class DeploySpec:
    """Everything ``deploy`` needs; validated on construction."""

    endpoint_name: str
    image_uri: str
    model_data: str
    role_arn: str
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    startup_timeout_s: int = 600
    suffix: str = ""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.endpoint_name):
            raise DeployError(f"invalid endpoint name {self.endpoint_name!r}: letters, digits, hyphens, ≤ 63")
        split_s3_uri(self.model_data)
        if not self.model_data.endswith(".tar.gz"):
            raise DeployError("--model-data must point at the model.tar.gz that `package` makes")
        if not _ROLE_RE.match(self.role_arn):
            raise DeployError(f"invalid execution role ARN {self.role_arn!r}")
        if not self.image_uri or any(c.isspace() for c in self.image_uri):
            raise DeployError(f"invalid image URI {self.image_uri!r}")
        if self.instance_count < 1:
            raise DeployError("--instance-count must be at least 1")
        if not self.instance_type.startswith("ml."):
            raise DeployError(f"invalid instance type {self.instance_type!r} (SageMaker types start with ml.)")

    def resource_name(self) -> str:
        """Name of this deployment's model and endpoint configuration: ``<endpoint>-<suffix>``, ≤ 63."""
        suffix = self.suffix or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        return f"{self.endpoint_name[: 62 - len(suffix)]}-{suffix}"


def _endpoint_exists(sm: Any, name: str) -> bool:
    try:
        sm.describe_endpoint(EndpointName=name)
    except sm.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationException":
            return False
        raise
    return True


def deploy(sm: Any, spec: DeploySpec, wait: bool = False) -> dict[str, str]:
    """Create the model and endpoint configuration, then create (or update) the endpoint."""
    name = spec.resource_name()
    container: dict[str, Any] = {
        "Image": spec.image_uri,
        "ModelDataUrl": spec.model_data,
        "Mode": "SingleModel",
    }
    if spec.environment:
        container["Environment"] = dict(spec.environment)
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=spec.role_arn)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": VARIANT_NAME,
                "ModelName": name,
                "InstanceType": spec.instance_type,
                "InitialInstanceCount": spec.instance_count,
                "InitialVariantWeight": 1.0,
                "ContainerStartupHealthCheckTimeoutInSeconds": spec.startup_timeout_s,
            }
        ],
    )
    if _endpoint_exists(sm, spec.endpoint_name):
        sm.update_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=name)
        action = "updated"
    else:
        sm.create_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=name)
        action = "created"
    if wait:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=spec.endpoint_name)
    status = sm.describe_endpoint(EndpointName=spec.endpoint_name)["EndpointStatus"]
    return {
        "endpoint": spec.endpoint_name,
        "endpoint_config": name,
        "model": name,
        "action": action,
        "status": status,
    }


def delete(sm: Any, endpoint_name: str) -> dict[str, str]:
    """Delete the endpoint, then the configuration and model it used."""
    described = sm.describe_endpoint(EndpointName=endpoint_name)
    config_name = described["EndpointConfigName"]
    config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    sm.delete_endpoint(EndpointName=endpoint_name)
    sm.delete_endpoint_config(EndpointConfigName=config_name)
    models = [variant["ModelName"] for variant in config["ProductionVariants"]]
    for model in models:
        sm.delete_model(ModelName=model)
    return {"endpoint": endpoint_name, "endpoint_config": config_name, "models": ",".join(models)}


# --------------------------------------------------------------------------------------------------- invoke
def content_type_for(path: Path) -> str:
    """The Content-Type to send for an image file, from its suffix."""
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def invoke(
    runtime: Any,
    endpoint_name: str,
    body: bytes,
    content_type: str,
    accept: str = "application/json",
    custom_attributes: str | None = None,
) -> tuple[str, bytes]:
    """Send ``body`` to the endpoint; return (content type, body) of the answer."""
    if not body:
        raise DeployError("the image is empty")
    if len(body) > PAYLOAD_LIMIT_BYTES:
        raise DeployError(
            f"the image is {len(body)} bytes; SageMaker real-time endpoints accept at most {PAYLOAD_LIMIT_BYTES} (6 MB)"
        )
    kwargs: dict[str, Any] = {
        "EndpointName": endpoint_name,
        "Body": body,
        "ContentType": content_type,
        "Accept": accept,
    }
    if custom_attributes:
        kwargs["CustomAttributes"] = custom_attributes
    answer = runtime.invoke_endpoint(**kwargs)
    return str(answer.get("ContentType", "")), answer["Body"].read()


# --------------------------------------------------------------------------------------------------- transform
@dataclasses.dataclass(frozen=True)
class TransformSpec:
    """A Batch Transform job over a prefix of image files; validated on construction."""

    job_name: str
    input_uri: str
    output_uri: str
    model_name: str | None = None
    image_uri: str | None = None
    model_data: str | None = None
    role_arn: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    content_type: str = "application/x-image"
    max_concurrent: int = 0
    environment: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.job_name):
            raise DeployError(f"invalid job name {self.job_name!r}: letters, digits, hyphens, ≤ 63")
        split_s3_uri(self.input_uri)
        split_s3_uri(self.output_uri)
        if self.model_name is None:
            if not (self.image_uri and self.model_data and self.role_arn):
                raise DeployError("give --model-name, or --image-uri, --model-data and --role-arn to create one")
            DeploySpec(self.job_name, self.image_uri, self.model_data, self.role_arn)  # the same checks as deploy
        elif not _NAME_RE.match(self.model_name):
            raise DeployError(f"invalid model name {self.model_name!r}")
        if self.instance_count < 1:
            raise DeployError("--instance-count must be at least 1")
        if not self.instance_type.startswith("ml."):
            raise DeployError(f"invalid instance type {self.instance_type!r} (SageMaker types start with ml.)")
        if self.content_type not in CONTENT_TYPES.values() and self.content_type != "application/x-image":
            raise DeployError(f"unsupported content type {self.content_type!r}")


def transform(sm: Any, spec: TransformSpec, wait: bool = False) -> dict[str, str]:
    """Start the Batch Transform job (creating its model first when asked); returns its name, model and status.

    Every object under the input prefix is one request (``SplitType=None``, ``BatchStrategy=SingleRecord``)
    within the real-time payload limit; the answers are the service's JSON, one ``.out`` file per image."""
    model_name = spec.model_name
    if model_name is None:
        assert spec.image_uri and spec.model_data and spec.role_arn
        container: dict[str, Any] = {"Image": spec.image_uri, "ModelDataUrl": spec.model_data, "Mode": "SingleModel"}
        if spec.environment:
            container["Environment"] = dict(spec.environment)
        sm.create_model(ModelName=spec.job_name, PrimaryContainer=container, ExecutionRoleArn=spec.role_arn)
        model_name = spec.job_name
    request: dict[str, Any] = {
        "TransformJobName": spec.job_name,
        "ModelName": model_name,
        "MaxPayloadInMB": PAYLOAD_LIMIT_BYTES // (1024 * 1024),
        "BatchStrategy": "SingleRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input_uri}},
            "ContentType": spec.content_type,
            "CompressionType": "None",
            "SplitType": "None",
        },
        "TransformOutput": {"S3OutputPath": spec.output_uri, "Accept": "application/json", "AssembleWith": "None"},
        "TransformResources": {"InstanceType": spec.instance_type, "InstanceCount": spec.instance_count},
    }
    if spec.max_concurrent:
        request["MaxConcurrentTransforms"] = spec.max_concurrent
    if spec.environment and spec.model_name is not None:
        request["Environment"] = dict(spec.environment)
    sm.create_transform_job(**request)
    if wait:
        sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName=spec.job_name)
    status = sm.describe_transform_job(TransformJobName=spec.job_name)["TransformJobStatus"]
    return {"job": spec.job_name, "model": model_name, "output": spec.output_uri, "status": status}


# --------------------------------------------------------------------------------------------------- CLI
def _parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeployError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def build_parser() -> argparse.ArgumentParser:
    """The ``mri-classifier sagemaker`` argument parser."""
    parser = argparse.ArgumentParser(prog="mri-classifier sagemaker", description=__doc__.splitlines()[0])
    parser.add_argument("--region", help="AWS region (default: the usual AWS configuration chain)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("package", help="make model.tar.gz from an exported model version")
    p.add_argument("--model-dir", type=Path, default=Path("models/mri-classifier"))
    p.add_argument("--version", help="version folder to ship (default: the highest)")
    p.add_argument("--output", type=Path, default=Path("model.tar.gz"))
    p.add_argument("--upload", metavar="S3_URI", help="also copy it to s3://bucket/key (or s3://bucket/prefix/)")

    d = sub.add_parser("deploy", help="create model, endpoint configuration and endpoint (or update it)")
    d.add_argument("--endpoint-name", required=True)
    d.add_argument("--image-uri", required=True, help="the service image in ECR (built from docker/)")
    d.add_argument("--model-data", required=True, help="s3://.../model.tar.gz made by `package`")
    d.add_argument("--role-arn", required=True, help="execution role SageMaker assumes to pull image and data")
    d.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    d.add_argument("--instance-count", type=int, default=1)
    d.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="container environment")
    d.add_argument("--startup-timeout", type=int, default=600, help="seconds allowed for /ping to turn 200")
    d.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")

    i = sub.add_parser("invoke", help="send one image to an endpoint and print the answer")
    i.add_argument("--endpoint-name", required=True)
    i.add_argument("--image", type=Path, required=True, help="JPEG, PNG or DICOM file")
    i.add_argument("--content-type", help="default: from the file suffix")
    i.add_argument("--accept", default="application/json")
    i.add_argument("--custom-attributes")

    x = sub.add_parser("delete", help="delete an endpoint with its configuration and model")
    x.add_argument("--endpoint-name", required=True)

    t = sub.add_parser("transform", help="start a Batch Transform job over an S3 prefix of images")
    t.add_argument("--job-name", required=True)
    t.add_argument("--input", required=True, help="s3://bucket/prefix/ holding the images (JPEG, PNG, DICOM)")
    t.add_argument("--output", required=True, help="s3://bucket/prefix/ for the answers (<file>.out)")
    t.add_argument("--model-name", help="an existing SageMaker model (e.g. the one `deploy` created)")
    t.add_argument("--image-uri", help="with --model-data and --role-arn: create the model")
    t.add_argument("--model-data", help="s3://.../model.tar.gz made by `package`")
    t.add_argument("--role-arn")
    t.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    t.add_argument("--instance-count", type=int, default=1)
    t.add_argument("--content-type", default="application/x-image", help="sent with every image (sniffed anyway)")
    t.add_argument("--max-concurrent", type=int, default=0, help="requests in flight per instance (0: SageMaker's)")
    t.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="container environment")
    t.add_argument("--wait", action="store_true", help="wait until the job has completed or stopped")
    return parser


def _client(service: str, region: str | None) -> Any:
    try:
        import boto3
    except ModuleNotFoundError:
        raise DeployError("boto3 is not installed: pip install 'mri-classifier[aws]'") from None
    return boto3.session.Session(region_name=region).client(service)


def _execute(args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "package":
        pkg = package_model(args.model_dir, args.output, args.version)
        result: dict[str, Any] = {
            "path": str(pkg.path),
            "version": pkg.version,
            "sha256": pkg.sha256,
            "bytes": pkg.size,
            "members": pkg.members,
        }
        if args.upload:
            result["s3_uri"] = upload(_client("s3", args.region), pkg.path, args.upload)
        return result
    if args.command == "deploy":
        spec = DeploySpec(
            endpoint_name=args.endpoint_name,
            image_uri=args.image_uri,
            model_data=args.model_data,
            role_arn=args.role_arn,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            environment=_parse_env(args.env),
            startup_timeout_s=args.startup_timeout,
        )
        return deploy(_client("sagemaker", args.region), spec, wait=args.wait)
    if args.command == "invoke":
        if not args.image.is_file():
            raise DeployError(f"no such image {args.image}")
        content_type, body = invoke(
            _client("sagemaker-runtime", args.region),
            args.endpoint_name,
            args.image.read_bytes(),
            args.content_type or content_type_for(args.image),
            args.accept,
            args.custom_attributes,
        )
        try:
            return {"content_type": content_type, "answer": json.loads(body)}
        except ValueError:
            return {"content_type": content_type, "answer": body.decode("utf-8", "replace")}
    if args.command == "transform":
        tspec = TransformSpec(
            job_name=args.job_name,
            input_uri=args.input,
            output_uri=args.output,
            model_name=args.model_name,
            image_uri=args.image_uri,
            model_data=args.model_data,
            role_arn=args.role_arn,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            content_type=args.content_type,
            max_concurrent=args.max_concurrent,
            environment=_parse_env(args.env),
        )
        return transform(_client("sagemaker", args.region), tspec, wait=args.wait)
    return delete(_client("sagemaker", args.region), args.endpoint_name)


def run(argv: list[str]) -> int:
    """Entry point of ``mri-classifier sagemaker``; prints a JSON result, returns 0, or 1 with a reason."""
    args = build_parser().parse_args(argv)
    try:
        result = _execute(args)
    except DeployError as exc:
        sys.stderr.write(f"mri-classifier sagemaker {args.command}: {exc}\n")
        return 1
    except Exception as exc:  # botocore's ClientError / NoCredentialsError and friends: say what AWS said
        if type(exc).__module__.startswith(("botocore", "boto3", "s3transfer")):
            sys.stderr.write(f"mri-classifier sagemaker {args.command}: {type(exc).__name__}: {exc}\n")
            return 1
        raise
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0
