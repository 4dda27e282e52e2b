"""WiSE-FT trial: LP on frozen ImageNet Lite0 features of the training split, then interpolate all weights
between the LP model and the shipped fine-tuned model; measure each mix on validation and external-dev."""
import json, time
import os
DATA = os.environ.get("DATA", "../shared/data")  # the folder holding brain-tumor-mri/ and external-dev/
import numpy as np, keras
from sklearn.linear_model import LogisticRegression
from training.model import build_model, EMBEDDING_LAYER, LOGITS_LAYER
from training.reexport import restore_weights, recreate_split
from training.metrics import classification_metrics, fit_temperature, softmax
from training.data import class_weights
from service.preprocessing import PreprocessConfig
from training import data as ds
t0 = time.time()
meta = json.load(open("models/mri-classifier/3/metadata.json"))
cfg = PreprocessConfig.from_dict(meta["preprocessing"])
loaded, tr, va = recreate_split(f"{DATA}/brain-tumor-mri/Training", meta, cfg)
ext_s, ext_k = ds.scan_folder(f"{DATA}/external-dev", require_all_classes=False)
ext = ds.load_images(ext_s, cfg, ext_k, progress=False)
Xtr, ytr = loaded.images[tr], loaded.labels[tr]
Xva, yva = loaded.images[va], loaded.labels[va]
Xex, yex = ext.images, ext.labels
print("data", round(time.time() - t0), "s", flush=True)
lp = build_model(224, "scratch/weights/efficientnet_lite0_imagenet.weights.h5", "efficientnet_lite0", 0.3)
enc = keras.Model(lp.input, lp.get_layer(EMBEDDING_LAYER).output)
def run(m, X):
    return np.concatenate([np.asarray(m(X[i:i+32].astype(np.float32), training=False)) for i in range(0, len(X), 32)])
F = {k: run(enc, X) for k, X in (("tr", Xtr), ("va", Xva), ("ex", Xex))}
np.savez("scratch/lp_feats.npz", **F)
print("LP feats", round(time.time() - t0), "s", flush=True)
cw = class_weights(ytr)
best = None
for C in (0.01, 0.03, 0.1, 0.3, 1.0):
    clf = LogisticRegression(C=C, max_iter=3000, class_weight=cw).fit(F["tr"], ytr)
    acc = (clf.predict(F["va"]) == yva).mean()
    print("C", C, "val", round(acc, 4), "ext", round((clf.predict(F["ex"]) == yex).mean(), 4), flush=True)
    if best is None or acc > best[0]: best = (acc, C, clf)
clf = best[2]
lp.get_layer(LOGITS_LAYER).set_weights([clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32)])
ft = build_model(224, "none", "efficientnet_lite0", 0.3)
restore_weights(ft, "models/mri-classifier/3")
lpw = [w.numpy() for w in lp.weights]; ftw = [w.numpy() for w in ft.weights]
mix = build_model(224, "none", "efficientnet_lite0", 0.3)
logit_model = keras.Model(mix.input, mix.get_layer(LOGITS_LAYER).output)
cached = dict(np.load("scratch/emb_v2.npz"))
res = {}
def report(a, lv, le):
    T = fit_temperature(lv, yva)
    out = {"temperature": T}
    for name, l, y in (("val", lv, yva), ("ext", le, yex)):
        m = classification_metrics(softmax(l, T), y)
        out[name] = {"accuracy": m["accuracy"], "accuracy_ci95": m["accuracy_ci95"], "ece": m["ece_15"],
                     "sens": {c: v["sensitivity"] for c, v in m["per_class"].items()}}
    res[a] = out
    print(a, json.dumps(out), flush=True)
report(0.0, clf.decision_function(F["va"]), clf.decision_function(F["ex"]))
report(1.0, cached["val_logits"], cached["ext_logits"])
for a in (0.5, 0.7, 0.85, 0.3):
    for w, x, y in zip(mix.weights, lpw, ftw): w.assign((1 - a) * x + a * y)
    report(a, run(logit_model, Xva), run(logit_model, Xex))
    json.dump(res, open("scratch/wise.json", "w"), indent=1)
print("done", round(time.time() - t0), "s")
