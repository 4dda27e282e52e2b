"""The Open Inference Protocol as a real client speaks it: ``tritonclient[http]`` (from PyPI) against a real
``mri-classifier serve`` process on a free loopback port, with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.imaging.preprocessing import PreprocessConfig, preprocess, to_model_input
from service.labels import CLASSES
from tests.reliability.server import ServerProcess
from tests.service import images
from tests.service.conftest import IMAGE_SIZE, MODEL_NAME

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)
TOLERANCE = 1e-4  # OpenVINO at f32 (or TensorFlow) against the TensorFlow reference


@pytest.fixture
def triton_client(model_root, tmp_path):
    """A tritonclient connected to ``mri-classifier serve`` (runtime auto), once the server says ready."""
    with ServerProcess(model_root, tmp_path, MRI_MAX_BATCH_SIZE="4", MRI_OPENVINO_PRECISION="f32") as server:
        server.wait_ready()
        client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=60.0)
        try:
            assert client.is_server_ready(), server.log()[-3000:]
            yield client
        finally:
            client.close()


def test_tritonclient_against_a_real_server(triton_client, tf_classifier):
    client = triton_client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME) and client.is_model_ready(MODEL_NAME, "1")
    assert not client.is_model_ready("other")
    server = client.get_server_metadata()
    assert set(server["extensions"]) >= {"binary_tensor_data", "classification"}
    metadata = client.get_model_metadata(MODEL_NAME)
    assert metadata["versions"] == ["1"]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [("images", "FP32"), ("image_files", "BYTES")]
    print("server metadata:", server)
    print("model metadata:", metadata)

    # UINT8 pixels in, binary; FP32 probabilities and the BOOL warning out, binary.
    batch = np.stack([images.mri_slice(s, size=48, cls=s % 4) for s in range(80, 83)])
    pixels = triton.InferInput("images", list(batch.shape), "UINT8")
    pixels.set_data_from_numpy(batch, binary_data=True)
    result = client.infer(
        MODEL_NAME,
        [pixels],
        outputs=[
            triton.InferRequestedOutput("probabilities", binary_data=True),
            triton.InferRequestedOutput("warning", binary_data=True),
        ],
        request_id="uint8-batch",
    )
    probs = result.as_numpy("probabilities")
    reference = tf_classifier.predict(np.stack([to_model_input(image, CONFIG) for image in batch]))
    assert probs.dtype == np.float32 and probs.shape == (3, 4)
    assert np.abs(probs - reference).max() <= TOLERANCE
    assert result.as_numpy("warning").dtype == np.bool_ and result.get_response()["id"] == "uint8-batch"
    print(
        "UINT8 [3,48,48,3] -> probabilities:",
        np.round(probs.astype(float), 4).tolist(),
        "warning:",
        result.as_numpy("warning"),
    )

    # FP32 pixels, sent as JSON (binary_data=False), answered as JSON.
    fp32 = triton.InferInput("images", list(batch[:1].shape), "FP32")
    fp32.set_data_from_numpy(batch[:1].astype(np.float32), binary_data=False)
    result = client.infer(MODEL_NAME, [fp32], outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)])
    assert np.abs(result.as_numpy("probabilities") - reference[:1]).max() <= TOLERANCE

    # Encoded files (JPEG, PNG, DICOM) as the metadata's BYTES input, binary; the classification extension, top 2.
    files = [images.jpeg(84), images.png_variants()["gray16"], images.dicom()]
    encoded = triton.InferInput("image_files", [len(files)], "BYTES")
    encoded.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=True)
    result = client.infer(
        MODEL_NAME,
        [encoded],
        model_version="1",
        outputs=[triton.InferRequestedOutput("probabilities", binary_data=True, class_count=2)],
    )
    top2 = result.as_numpy("probabilities")
    assert top2.shape == (3, 2)
    expected = tf_classifier.predict(np.stack([preprocess(f, CONFIG) for f in files]))
    for row, probs_row in zip(top2, expected, strict=True):
        value, index, label = row[0].decode().split(":")
        assert int(index) == int(np.argmax(probs_row)) and label == CLASSES[int(index)]
        assert abs(float(value) - probs_row.max()) <= TOLERANCE
    print("BYTES [JPEG, PNG, DICOM] classification top 2:", [[c.decode() for c in row] for row in top2])

    # Errors come back in the protocol's shape, as InferenceServerException with the status.
    bad = triton.InferInput("images", [1, 8, 8], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL_NAME, [bad])
    assert caught.value.status() == "422" and "expected [N, height, width, 3]" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("other")
    assert caught.value.status() == "404"
    print("errors:", caught.value.status(), caught.value.message())
