"""Export a trained Keras model as a TF-Serving-style versioned SavedModel with ``metadata.json``.

Layout (what the service loads)::

    <model_dir>/<version>/saved_model.pb, variables/, metadata.json

Signatures:

* ``serving_default``: ``images`` float32 [N, S, S, 3] in [0, 255] -> ``probabilities`` float32 [N, 4]
  (temperature scaling fitted on validation is built in) and, when a bank of training embeddings is given,
  ``ood_score`` float32 [N] (``training.ood_score``: higher = less like the training images);
* ``gradcam``: ``images`` and ``class_index`` int32 [N] (-1 = the predicted class) -> ``probabilities``,
  ``heatmap`` float32 [N, h, w] in [0, 1] (Grad-CAM on the last convolutional block) and ``class_index``.

A version is written to a hidden temporary folder and renamed into place, so a reader never sees a
half-written version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from service.inference.versions import METADATA_FILE, next_version
from training.model import EMBEDDING_LAYER, FEATURE_LAYER, LOGITS_LAYER
from training.ood_score import DEFAULT_K, OOD_OUTPUT, describe, ood_layer

SERVING_SIGNATURE = "serving_default"
GRADCAM_SIGNATURE = "gradcam"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"


def _serving_parts(
    model: keras.Model, temperature: float, ood_bank: np.ndarray | None, ood_k: int
) -> tuple[keras.Model, keras.Model]:
    """(serving model: images -> {calibrated probabilities[, ood_score]}, cam model: images -> [features,
    scaled logits])."""
    logits = model.get_layer(LOGITS_LAYER).output
    # float32 whatever the global policy: under mixed_float16 the served outputs would be float16
    scaled = keras.layers.Rescaling(1.0 / float(temperature), name="temperature", dtype="float32")(logits)
    probs = keras.layers.Softmax(name="calibrated_probabilities", dtype="float32")(scaled)
    outputs = {OUTPUT_NAME: probs}
    if ood_bank is not None:
        outputs[OOD_OUTPUT] = ood_layer(ood_bank, ood_k)(model.get_layer(EMBEDDING_LAYER).output)
    serving = keras.Model(model.input, outputs, name="serving")
    features = model.get_layer(FEATURE_LAYER).output
    cam_model = keras.Model(model.input, [features, scaled], name="gradcam")
    return serving, cam_model


def export_model(
    model: keras.Model,
    model_dir: str | os.PathLike[str],
    metadata: dict[str, Any],
    temperature: float = 1.0,
    version: int | None = None,
    ood_bank: np.ndarray | None = None,
    ood_k: int = DEFAULT_K,
    ood_fitted_on: str = "training split",
) -> Path:
    """Write ``model`` as ``<model_dir>/<version>/`` atomically and return the version folder.

    ``ood_bank``: penultimate embeddings [M, D] of the training split (``training.ood_score.embed``); when
    given, ``serving_default`` also returns ``ood_score`` and the metadata describes it (key ``"ood_score"``).
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version if version is not None else next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"model version {final} already exists")
    size = int(model.input.shape[1])
    serving, cam_model = _serving_parts(model, temperature, ood_bank, ood_k)
    images_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return dict(serving(images, training=False))

    def gradcam(images: tf.Tensor, class_index: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            features, scaled_logits = cam_model(images, training=False)
            tape.watch(features)
            probs = tf.nn.softmax(scaled_logits, axis=-1)
            predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
            chosen = tf.where(class_index < 0, predicted, class_index)
            score = tf.gather(scaled_logits, chosen, batch_dims=1)
        grads = tf.cast(tape.gradient(score, features), tf.float32)  # features are float16 under mixed precision
        features = tf.cast(features, tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2))
        cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))
        cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-8)
        return {OUTPUT_NAME: probs, "heatmap": cam, "class_index": chosen}

    # No archive.track(): the endpoints capture the variables they use, and tracking the Keras models as well
    # would store every weight twice (keras-team/keras#23553: 2x the files and 2x the memory of every loader).
    archive = keras.export.ExportArchive()
    archive.add_endpoint(SERVING_SIGNATURE, serve, input_signature=[images_spec])
    archive.add_endpoint(
        GRADCAM_SIGNATURE,
        gradcam,
        input_signature=[images_spec, tf.TensorSpec([None], tf.int32, name="class_index")],
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        archive.write_out(str(tmp), verbose=False)
        serving_outputs = [OUTPUT_NAME] + ([OOD_OUTPUT] if ood_bank is not None else [])
        meta = {
            **{k: v for k, v in metadata.items() if k != OOD_OUTPUT},
            "version": version,
            "temperature": float(temperature),
            **({OOD_OUTPUT: describe(ood_bank, ood_k, ood_fitted_on)} if ood_bank is not None else {}),
            "signatures": {
                SERVING_SIGNATURE: {"input": INPUT_NAME, "output": OUTPUT_NAME, "outputs": serving_outputs},
                GRADCAM_SIGNATURE: {
                    "inputs": [INPUT_NAME, "class_index"],
                    "outputs": [OUTPUT_NAME, "heatmap", "class_index"],
                },
            },
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
