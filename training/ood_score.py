"""The model's own "unlike the training images" score: a k-nearest-neighbour distance on its penultimate embedding.

Sun et al. (ICML 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors"): L2-normalise the
embedding (the global-average-pooled features, ``training.model.EMBEDDING_LAYER``) and take one minus the
cosine similarity to the ``k``-th nearest embedding of the training split. Training-like images sit close to
many training images (small score); images from another collection, sequence or plane, and non-MRI images,
sit far from them (large score). It needs no labels and no out-of-distribution examples to fit.

:class:`KnnDistance` holds the normalised training embeddings (the *bank*, stored in float16: half the size,
the same ranking to 3 decimals of AUROC) as a non-trainable weight, so the exported SavedModel computes the
score itself and TensorFlow, OpenVINO and ONNX Runtime all compute it the same way (``training.export``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from training.model import EMBEDDING_LAYER

OOD_OUTPUT = "ood_score"
DEFAULT_K = 10
BANK_DTYPE = "float16"
METHOD = "k-nearest-neighbour cosine distance on the penultimate embedding (Sun et al. 2022)"


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    x = np.asarray(embeddings, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_distance(embeddings: np.ndarray, bank: np.ndarray, k: int = DEFAULT_K) -> np.ndarray:
    """NumPy reference of :class:`KnnDistance`: 1 - cosine similarity to the ``k``-th nearest bank row."""
    k = min(k, len(bank))
    bank32 = normalise(bank).astype(BANK_DTYPE).astype(np.float32)
    sims = normalise(embeddings) @ bank32.T
    return np.asarray(1.0 - np.sort(sims, axis=1)[:, -k], dtype=np.float32)


@keras.saving.register_keras_serializable(package="mri_classifier")
class KnnDistance(keras.layers.Layer):
    """Embeddings [N, D] -> [N]: one minus the cosine similarity to the ``k``-th nearest row of ``bank``."""

    def __init__(self, bank_size: int, dim: int, k: int = DEFAULT_K, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bank_size, self.dim, self.k = int(bank_size), int(dim), min(int(k), int(bank_size))
        # Stored transposed ([D, M]) so the call is one matmul; float16 halves the size of the SavedModel.
        self.bank_t = self.add_weight(
            shape=(self.dim, self.bank_size), initializer="zeros", trainable=False, dtype=BANK_DTYPE, name="bank"
        )

    def set_bank(self, bank: np.ndarray) -> None:
        """Store the (training-split) embeddings [M, D], normalised."""
        self.bank_t.assign(normalise(bank).T.astype(BANK_DTYPE))

    def call(self, embeddings: Any) -> Any:
        x = keras.ops.cast(embeddings, "float32")
        x = x / keras.ops.sqrt(keras.ops.sum(x * x, axis=-1, keepdims=True) + 1e-12)
        sims = keras.ops.matmul(x, keras.ops.cast(self.bank_t, "float32"))
        nearest, _ = keras.ops.top_k(sims, k=self.k)
        return 1.0 - nearest[:, self.k - 1]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bank_size": self.bank_size, "dim": self.dim, "k": self.k}


def ood_layer(bank: np.ndarray, k: int = DEFAULT_K) -> KnnDistance:
    """A :class:`KnnDistance` layer holding ``bank`` (embeddings of the training split)."""
    layer = KnnDistance(len(bank), bank.shape[1], k, name=OOD_OUTPUT, dtype="float32")  # float32 under mixed precision
    layer.build((None, bank.shape[1]))
    layer.set_bank(bank)
    return layer


def embedding_model(model: keras.Model) -> keras.Model:
    """images -> penultimate embedding [N, D] of a classifier built by ``training.model.build_model``."""
    return keras.Model(model.input, model.get_layer(EMBEDDING_LAYER).output, name="embedding")


def embed(
    model: keras.Model, images: np.ndarray, batch_size: int = 32, on_batch: Callable[[int], None] | None = None
) -> np.ndarray:
    """Penultimate embeddings of uint8/float images [N, S, S, 3] (inference mode, batch by batch); ``on_batch``
    is called with each batch's size (progress)."""
    encoder = embedding_model(model)
    out = []
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i : i + batch_size], dtype=np.float32)
        out.append(np.asarray(encoder(batch, training=False)))
        if on_batch is not None:
            on_batch(len(batch))
    return np.concatenate(out) if out else np.zeros((0, int(encoder.output.shape[-1])), np.float32)


def describe(bank: np.ndarray, k: int, fitted_on: str) -> dict[str, Any]:
    """The ``metadata.json["ood_score"]`` section: what the exported output means."""
    return {
        "output": OOD_OUTPUT,
        "method": METHOD,
        "embedding": EMBEDDING_LAYER,
        "k": min(k, len(bank)),
        "bank_size": len(bank),
        "bank_dtype": BANK_DTYPE,
        "fitted_on": fitted_on,
        "range": [0.0, 2.0],
        "higher_means": "less like the training images",
    }
