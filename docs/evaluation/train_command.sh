#!/bin/bash
# The command that trained version 2, the fine-tuned half of the shipped WiSE-FT model version 3
# (docs/evaluation/v3/ mixes it with a linear probe); about 55 min on 2 CPU cores.
# The recipe is docker/hyperparameters.json (the one source: the train image, compose, Kubernetes and SageMaker
# use the same file), with the weights file made by `make lite0-weights` instead of the image's copy.
# Writes runs/shipped/{model,work}; add --resume to continue after an interruption.
set -euo pipefail
cd "$(dirname "$0")/../.."
export TF_CPP_MIN_LOG_LEVEL=2
WEIGHTS=${WEIGHTS:-scratch/weights/efficientnet_lite0_imagenet.weights.h5}
mapfile -t RECIPE < <(.venv/bin/python - "$WEIGHTS" <<'PY'
import json
import sys

from training.sagemaker import hyperparameters_to_argv

recipe = json.load(open("docker/hyperparameters.json"))
recipe["weights"] = sys.argv[1]
print("\n".join(hyperparameters_to_argv(recipe)))
PY
)
exec .venv/bin/mri-classifier train --data ../shared/data/brain-tumor-mri/Training --test ../shared/data/brain-tumor-mri/Testing \
  --model-dir runs/shipped/model --work-dir runs/shipped/work "${RECIPE[@]}" --no-progress "$@"
