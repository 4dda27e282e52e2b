"""POST /explain: the Grad-CAM answer, its options and errors, and a planted model whose answer is known."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.imaging.preprocessing import PreprocessConfig, preprocess
from service.inference.classifier import Classifier
from service.labels import CLASSES
from tests.service import images
from tests.service.conftest import IMAGE_SIZE, MODEL_NAME, make_settings, metadata

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)


def _png_array(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_explain_answers_the_prediction_and_a_heatmap(client):
    data = images.jpeg(21)
    response = client.post("/explain?heatmap=true", files={"file": ("scan.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    predicted = client.post("/predict", files={"file": ("scan.jpg", data, "image/jpeg")}).json()
    assert body["model_name"] == MODEL_NAME and body["model_version"] == 1
    assert body["prediction"] == predicted["predictions"][0]
    explanation = body["explanation"]
    assert explanation["method"] == "grad-cam"
    assert explanation["target_layer"] == "top_activation"
    assert explanation["class_name"] == body["prediction"]["label"]
    heat = np.array(explanation["heatmap"])
    assert heat.shape == (IMAGE_SIZE // 4, IMAGE_SIZE // 4) == tuple(explanation["heatmap_shape"])
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat.max() == pytest.approx(1.0, abs=1e-3)
    assert heat.std() > 0.01, "the heatmap is constant"
    np.testing.assert_array_equal(_png_array(explanation["image_png"]), preprocess(data, CONFIG))
    overlay = _png_array(explanation["overlay_png"])
    assert overlay.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert not np.array_equal(overlay, preprocess(data, CONFIG))


def test_raw_heatmap_only_on_request(client):
    response = client.post("/explain", files={"file": ("a.jpg", images.jpeg(22), "image/jpeg")})
    assert response.status_code == 200
    assert response.json()["explanation"]["heatmap"] is None


@pytest.fixture(scope="module")
def reference_heatmap(model_root: Path):
    """``reference_heatmap(image, class_index)``: the exported ``gradcam`` signature called directly with
    TensorFlow on one model input [S, S, 3], not through the service's explainer or route."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(model_root / "1")).signatures["gradcam"]

    def heat(image: np.ndarray, class_index: int) -> np.ndarray:
        images_in = tf.constant(image[None].astype(np.float32))
        return signature(images=images_in, class_index=tf.constant([class_index], tf.int32))["heatmap"].numpy()[0]

    return heat


@pytest.mark.parametrize("how", ["query", "form", "alias"])
def test_requested_class(client, expected, reference_heatmap, how):
    """The heatmap is the Grad-CAM of the requested class, not of the predicted one (another class here)."""
    target = "meningioma"
    data = next(
        data
        for data in map(images.jpeg, range(23, 63))
        if CLASSES[int(np.argmax(expected(preprocess(data, CONFIG)[None])))] != target
    )
    files = {"file": ("a.jpg", data, "image/jpeg")}
    if how == "query":
        response = client.post(f"/explain?heatmap=true&class_name={target}", files=files)
    elif how == "form":
        response = client.post("/explain?heatmap=true", files=files, data={"class_name": target})
    else:
        response = client.post("/explain?heatmap=true&class_name=meningioma_tumor", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["explanation"]["class_name"] == target and body["prediction"]["label"] != target
    heat = np.array(body["explanation"]["heatmap"])
    model_input = preprocess(data, CONFIG)
    np.testing.assert_allclose(heat, reference_heatmap(model_input, CLASSES.index(target)), atol=1e-4)
    predicted = reference_heatmap(model_input, CLASSES.index(body["prediction"]["label"]))
    assert np.abs(heat - predicted).max() > 0.05, "the requested class's heatmap is the predicted class's"


def test_unknown_class_is_422(client):
    response = client.post("/explain?class_name=astrocytoma", files={"file": ("a.jpg", images.jpeg(1), "image/jpeg")})
    assert response.status_code == 422
    assert response.json() == {"error": f"unknown class_name; choose one of {', '.join(CLASSES)}"}


def test_png_when_asked(client):
    data = images.jpeg(24)
    response = client.post("/explain", content=data, headers={"Content-Type": "image/jpeg", "Accept": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-explained-class"] in CLASSES
    assert response.headers["x-input-warning"] in ("true", "false")
    assert Image.open(io.BytesIO(response.content)).size == (IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"headers": {"Accept": "text/csv"}}, 406, "this endpoint answers application/json or image/png"),
        ({"content": b"a,b\n1,2\n", "headers": {"Content-Type": "text/csv"}}, 415, None),
        ({"files": {"other": ("a.jpg", b"x", "image/jpeg")}}, 422, "no image: send it in the form field 'file'"),
        (
            {"files": [("file", ("a.jpg", images.jpeg(1), "image/jpeg")), ("file", ("b.jpg", images.jpeg(2), "x"))]},
            413,
            "/explain takes one image per request",
        ),
        ({"files": {"file": ("a.gif", b"GIF89a" + bytes(64), "image/gif")}}, 415, None),
        ({"files": {"file": ("a.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg")}}, 400, None),
    ],
)
def test_errors(client, kwargs, status, error):
    if "content" not in kwargs and "files" not in kwargs:
        kwargs["files"] = {"file": ("a.jpg", images.jpeg(1), "image/jpeg")}
    response = client.post("/explain", **kwargs)
    assert response.status_code == status, response.text
    if error:
        assert response.json() == {"error": error}
    else:
        assert response.json()["error"]


def test_explain_with_openvino_serving_uses_tensorflow_for_the_heatmap(open_client, model_root, ov_classifier):
    client = open_client(make_settings(model_root, runtime="openvino"), ov_classifier)
    data = images.jpeg(25)
    body = client.post("/explain?heatmap=true", files={"file": ("a.jpg", data, "image/jpeg")}).json()
    predicted = client.post("/predict", files={"file": ("a.jpg", data, "image/jpeg")}).json()["predictions"][0]
    assert body["prediction"] == predicted
    assert np.array(body["explanation"]["heatmap"]).std() > 0.01
    explainer = client.app.state.explainer
    assert explainer.gradcam(ov_classifier.model) is explainer.gradcam(ov_classifier.model)  # loaded once


def test_explanation_is_in_the_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    assert "/explain" in schema["paths"]
    assert "ExplainResponse" in schema["components"]["schemas"]
    assert "InputCheck" in schema["components"]["schemas"]


# A planted model: the class is the quadrant holding a bright square, so Grad-CAM must point at that quadrant.

PLANT_SIZE = 32
QUADRANTS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column) of the square for class 0..3


def _quadrant_model():
    """images -> brightness on a 8x8 grid -> 4 channels, channel k kept only in quadrant k (``top_activation``)
    -> global average pooling -> logits = 40 x channel means. Hand-set, no training: the answer is known."""
    import keras

    from training.model import FEATURE_LAYER, LOGITS_LAYER, PROBS_LAYER

    masks = np.zeros((8, 8, 4), dtype="float32")
    for k, (row, col) in enumerate(QUADRANTS):
        masks[row * 4 : row * 4 + 4, col * 4 : col * 4 + 4, k] = 1.0

    class QuadrantMask(keras.layers.Layer):
        def build(self, input_shape):
            self.masks = self.add_weight(shape=masks.shape, initializer="zeros", trainable=False, name="masks")
            self.masks.assign(masks)

        def call(self, x):
            return x * self.masks

    inputs = keras.Input((PLANT_SIZE, PLANT_SIZE, 3), name="images")
    gray = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(1 / 765))(inputs)
    grid = keras.layers.AveragePooling2D(4)(gray)  # [8, 8, 1] mean brightness in [0, 1]
    tiled = keras.layers.Concatenate()([grid] * 4)
    features = keras.layers.Activation("relu", name=FEATURE_LAYER)(QuadrantMask()(tiled))
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    logits = keras.layers.Dense(
        4, name=LOGITS_LAYER, kernel_initializer=keras.initializers.Identity(40.0), bias_initializer="zeros"
    )(pooled)
    probs = keras.layers.Activation("softmax", name=PROBS_LAYER)(logits)
    return keras.Model(inputs, probs)


def _square_image(cls: int, rng: np.random.Generator) -> np.ndarray:
    row, col = QUADRANTS[cls]
    gray = rng.normal(20, 6, (PLANT_SIZE, PLANT_SIZE)).clip(0, 255)
    y = row * 16 + int(rng.integers(1, 7))
    x = col * 16 + int(rng.integers(1, 7))
    gray[y : y + 8, x : x + 8] = 230
    return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.fixture(scope="module")
def planted_classifier(tmp_path_factory) -> tuple[Path, Classifier]:
    from training.export import export_model

    root = tmp_path_factory.mktemp("planted") / MODEL_NAME
    meta = metadata()
    meta["preprocessing"] = PreprocessConfig(image_size=PLANT_SIZE).to_dict()
    export_model(_quadrant_model(), root, meta, version=1)
    classifier = Classifier(make_settings(root))
    assert classifier.load(), classifier.reason
    return root, classifier


def test_planted_heatmap_peaks_in_the_square_quadrant(open_client, planted_classifier):
    root, classifier = planted_classifier
    client = open_client(make_settings(root), classifier)
    rng = np.random.default_rng(0)
    for cls in range(4):
        image = _square_image(cls, rng)
        data = images.encode(image, "PNG")
        body = client.post("/explain?heatmap=true", files={"file": ("a.png", data, "image/png")}).json()
        assert body["prediction"]["label"] == CLASSES[cls]
        heat = np.array(body["explanation"]["heatmap"])
        peak_row, peak_col = np.unravel_index(np.argmax(heat), heat.shape)
        assert (peak_row // 4, peak_col // 4) == QUADRANTS[cls]
        quadrant = heat[QUADRANTS[cls][0] * 4 :][:4, QUADRANTS[cls][1] * 4 :][:, :4]
        assert heat.sum() - quadrant.sum() < 1e-3, "heat outside the square's quadrant"
        # the peak cell holds the square: it is the brightest 4x4 cell of the image
        cells = image[:, :, 0].reshape(8, 4, 8, 4).mean(axis=(1, 3))
        assert cells[peak_row, peak_col] > 100


def test_planted_heatmap_follows_the_requested_class(open_client, planted_classifier):
    root, classifier = planted_classifier
    client = open_client(make_settings(root), classifier)
    data = images.encode(_square_image(0, np.random.default_rng(1)), "PNG")
    body = client.post("/explain?heatmap=true&class_name=pituitary", files={"file": ("a.png", data, "image/png")})
    heat = np.array(body.json()["explanation"]["heatmap"])
    assert heat[4:, 4:].sum() == pytest.approx(heat.sum())  # class 3's quadrant: bottom right


@pytest.fixture(scope="module")
def no_gradcam_root(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel with only ``serving_default`` (as exported by another tool), with valid metadata."""
    import shutil

    import tensorflow as tf

    class Plain(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="images")])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            means = tf.reduce_mean(images, axis=[1, 2]) / 255.0
            logits = tf.concat([means, tf.zeros_like(means[:, :1])], axis=1)
            return {"probabilities": tf.nn.softmax(logits)}

    version_dir = tmp_path_factory.mktemp("plain") / MODEL_NAME / "1"
    module = Plain()
    tf.saved_model.save(module, str(version_dir), signatures={"serving_default": module.serve})
    shutil.copy(model_root / "1" / "metadata.json", version_dir / "metadata.json")
    return version_dir.parent


def test_a_model_without_gradcam_is_looked_at_once(open_client, no_gradcam_root, monkeypatch):
    """Every /explain on such a model answers 501 at once: the SavedModel is not loaded again each time."""
    from service.inference import explain

    classifier = Classifier(make_settings(no_gradcam_root, runtime="openvino"))
    assert classifier.load(), classifier.reason
    loads = []
    real_load = explain.load_gradcam
    monkeypatch.setattr(explain, "load_gradcam", lambda model: loads.append(model) or real_load(model))
    client = open_client(make_settings(no_gradcam_root, runtime="openvino"), classifier)
    for _ in range(3):
        response = client.post("/explain", files={"file": ("a.jpg", images.jpeg(26), "image/jpeg")})
        assert response.status_code == 501, response.text
        assert "no gradcam signature" in response.json()["error"]
    assert len(loads) == 1
    assert client.post("/predict", files={"file": ("a.jpg", images.jpeg(26), "image/jpeg")}).status_code == 200
