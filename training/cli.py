"""The ``mri-classifier`` command: ``train``, ``publish``, ``evaluate``, ``prepare``, ``predict``, ``serve``,
``dicom-node``, ``sagemaker`` and ``fetch-model``; ``--version`` prints the installed version.

``train`` and ``serve`` are also the two arguments SageMaker starts a container with, so the container's
entrypoint is this command. Heavy modules are imported inside each subcommand: ``serve`` needs only the
service's dependencies.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

#: subcommand -> (module with a ``run(argv)``, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.job", "Train the shipped recipe end to end (SageMaker `train` contract too)."),
    "publish": ("training.publish", "Add a trained model to a model store as its next version, atomically."),
    "evaluate": ("training.evaluate", "Evaluate an exported model on a test folder and write a report."),
    "prepare": ("training.prepare", "De-duplicate, split and write the dataset as sharded TFRecords."),
    "predict": ("training.predict", "Score image files and folders into a CSV, without a server."),
    "serve": ("service.server", "Start the inference service (SageMaker `serve` contract too)."),
    "dicom-node": ("service.dicom_node.node", "Receive MR series from a PACS over DICOM, send the results back."),
    "sagemaker": ("training.sagemaker_deploy", "Package a model.tar.gz, deploy an endpoint, invoke it."),
    "fetch-model": ("service.inference.fetch_model", "Download a model (s3:// or https://) into a folder."),
}


def version() -> str:
    """The installed distribution's version (``0.0.0+unknown`` when run from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("mri-classifier")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; each one parses its own options."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        sys.stdout.write(f"mri-classifier {version()}\n")
        return 0
    if not args or args[0] in ("-h", "--help"):
        lines = ["usage: mri-classifier [--version] {" + ",".join(COMMANDS) + "} [options]", ""]
        lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
        sys.stdout.write("\n".join(lines) + "\n")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"mri-classifier: unknown command {name!r}; try --help\n")
        return 2
    import importlib

    module = importlib.import_module(COMMANDS[name][0])
    return int(module.run(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
