#!/bin/bash
cd /work/main
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/mri-classifier train --data ../shared/data/brain-tumor-mri/Training --test ../shared/data/brain-tumor-mri/Testing \
  --model-dir runs/shipped/model --work-dir runs/shipped/work --model-name mri-classifier \
  --backbone efficientnet_lite0 --weights scratch/weights/efficientnet_lite0_imagenet.weights.h5 \
  --image-size 224 --crop-brain --freeze-epochs 3 --epochs 12 --batch-size 32 \
  --learning-rate 1e-3 --fine-tune-learning-rate 1e-4 --fine-tune-from block4a --label-smoothing 0.1 \
  --gamma 0.25 --blur-probability 0.2 --noise-std 3 --contrast 0.2 --no-progress "$@"
