#!/bin/bash
# The command that trained the shipped model (models/mri-classifier/2); about 55 min on 2 CPU cores.
# Writes runs/shipped/{model,work}; add --resume to continue after an interruption.
cd "$(dirname "$0")/../.."
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/mri-classifier train --data ../shared/data/brain-tumor-mri/Training --test ../shared/data/brain-tumor-mri/Testing \
  --model-dir runs/shipped/model --work-dir runs/shipped/work --model-name mri-classifier \
  --backbone efficientnet_lite0 --weights scratch/weights/efficientnet_lite0_imagenet.weights.h5 \
  --image-size 224 --crop-brain --freeze-epochs 2 --epochs 16 --batch-size 32 \
  --learning-rate 1e-3 --fine-tune-learning-rate 2e-4 --fine-tune-from block4a --label-smoothing 0.1 \
  --zoom 0.15 --gamma 0.4 --contrast 0.3 --blur-probability 0.3 --noise-std 4 \
  --downscale-probability 0.3 --invert-probability 0.15 --mixup-alpha 0.2 --no-progress "$@"
