# Run from the repository root; DATA is the folder holding brain-tumor-mri/ and external-dev/.
DATA=${DATA:-../shared/data}
test -f scratch/wise_model/3/saved_model.pb || { echo "no wise model"; exit 0; }
nice .venv/bin/python benchmarks/ood_calibration.py --model-dir scratch/wise_model --version 3 \
  --data "$DATA"/brain-tumor-mri --external-dev "$DATA"/external-dev \
  --test-folder "$DATA"/brain-tumor-mri/Testing --json scratch/ood_wise.json --write > scratch/cal_wise.log 2>&1
nice .venv/bin/python -m training.cli evaluate --model scratch/wise_model/3 \
  --data "$DATA"/brain-tumor-mri/Testing --train-data "$DATA"/brain-tumor-mri/Training \
  --out scratch/eval_wise --no-progress > scratch/eval_wise.log 2>&1
nice .venv/bin/python - > scratch/tp_wise.log 2>&1 <<'PY'
import time, numpy as np
from pathlib import Path
from service.config import Settings
from service.runtime import load_runtime
x = np.load("scratch/images_small.npz")["ext"][:8].astype(np.float32)
s = Settings(_env_file=None, model_dir=Path("models/mri-classifier"))
for label, vd in (("v2", "scratch/v2/models/mri-classifier/2"), ("wise", "scratch/wise_model/3")) * 2:
    r = load_runtime("openvino", Path(vd), s)
    for _ in range(3): r.predict(x)
    t = time.perf_counter(); n = 0
    while time.perf_counter() - t < 6: r.predict(x); n += 8
    print(label, "openvino batch-8", round(n / (time.perf_counter() - t), 1), "img/s", flush=True)
PY
