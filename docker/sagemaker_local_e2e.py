"""SageMaker end to end, on this machine: the SageMaker Python SDK's local mode deploys the service image
with a ``model.tar.gz`` made by ``mri-classifier sagemaker package``, predicts one JPEG, deletes the endpoint.

Run by ``make image-test`` (phase ``sagemaker``) after the images are built, in its own virtualenv with
``sagemaker==2.257.7`` (3.x is untested), against a Docker-compatible socket (``DOCKER_HOST``, podman's) and
docker-compose v1. Dummy credentials; nothing leaves the machine (local mode talks to 127.0.0.1:8080 only).

    python sagemaker_local_e2e.py IMAGE MODEL_TAR_GZ JPEG
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")


def say(text: str) -> None:
    """One line of the test log."""
    sys.stdout.write(f"[sagemaker-local] {text}\n")
    sys.stdout.flush()


def opt_out_of_telemetry(folder: Path) -> None:
    """The SDK reports usage to an S3 URL unless its config opts out: opt out (nothing may leave the machine)."""
    config = folder / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config)
    os.environ["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"


def main(image: str, model_tar: Path, jpeg: Path) -> int:
    """Deploy, predict, delete; exit non-zero on any mismatch."""
    opt_out_of_telemetry(model_tar.parent)
    import sagemaker
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.local import LocalSession
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    say(f"SDK {sagemaker.__version__}; image {image}; model data {model_tar}")
    session = LocalSession()
    port = int(os.environ.get("SAGEMAKER_LOCAL_PORT", "8080"))
    session.config = {"local": {"local_code": True, "serving_port": port}}
    name = "mri-classifier-local-e2e"
    model = Model(
        image_uri=image,
        model_data=f"file://{model_tar.resolve()}",
        role="arn:aws:iam::111111111111:role/SageMakerRole",  # dummy: local mode never assumes it
        sagemaker_session=session,
        env={"MRI_LOG_LEVEL": "info"},
        name=name,
        predictor_cls=Predictor,
    )
    start = time.monotonic()
    try:
        predictor = model.deploy(
            initial_instance_count=1,
            instance_type="local",
            endpoint_name=name,
            serializer=IdentitySerializer("image/jpeg"),
            deserializer=JSONDeserializer(),
        )
        say(f"endpoint {predictor.endpoint_name} in service after {time.monotonic() - start:.1f} s")
        answer = predictor.predict(jpeg.read_bytes())
        say(f"predict -> {json.dumps(answer)[:300]}")
        # TF Serving's shape, as AWS's TensorFlow containers answer: one probability per class, in class order.
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        first = predictions[0] if predictions else None
        if not isinstance(first, list) or len(first) != len(CLASSES) or abs(sum(first) - 1) > 1e-3:
            say("FAIL: expected {'predictions': [[4 probabilities summing to 1]]}")
            return 1
        say(f"most probable: {CLASSES[first.index(max(first))]} ({max(first):.3f})")
    finally:
        for delete in (session.delete_endpoint, session.delete_endpoint_config, session.delete_model):
            try:
                delete(name)
            except Exception as exc:  # clean up as much as exists; report the rest
                say(f"cleanup {delete.__name__}({name}): {type(exc).__name__}: {exc}")
        say("endpoint, endpoint config and model deleted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
