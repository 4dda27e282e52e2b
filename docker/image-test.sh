#!/usr/bin/env bash
# `make image-test`: build the images with podman and run them for real, as SageMaker, compose and a
# Kubernetes pod would. Root on Debian/Ubuntu; installs what it needs (podman, runc, debootstrap,
# docker-compose v1, podman-docker, and podman's dnsname CNI plugin, without which compose services cannot
# resolve each other's names under podman 4.3) and works where Docker Hub is unreachable and a TLS proxy
# intercepts. Proves: the service image serves its built-in model with no mount and no other step (and a
# mounted model instead, and never the built-in one in place of a broken mount); a plain `docker-compose up`
# becomes ready and predicts; the train image runs the whole shipped recipe (fine-tuning, probe, weight mix,
# temperature, kNN bank, warning thresholds, report) offline from its own Lite0 weights on a small subset, and
# the service image serves what it made; the GPU images build from the same Debian base with TensorFlow's CUDA
# wheels, and the GPU service image, run without a GPU, falls back to OpenVINO on the CPU, answers /predict and
# says why on /readyz.
#
#   bash docker/image-test.sh                  every phase
#   bash docker/image-test.sh sagemaker        only some phases (tools base build train serve build-gpu serve-gpu
#                                              compose sagemaker)
#
# Settings (environment): IMAGE_TEST_WORK (scratch folder, default /var/tmp/mri-image-test), IMAGE_TEST_CA
# (CA bundle passed to builds as a secret), IMAGE_TEST_NICE (niceness, 15), IMAGE_TEST_PORT (service port on
# 127.0.0.1, 8080), DEBIAN_MIRROR (for debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WORK=${IMAGE_TEST_WORK:-/var/tmp/mri-image-test}
CA=${IMAGE_TEST_CA:-/etc/ssl/certs/ca-certificates.crt}
NICE=(nice -n "${IMAGE_TEST_NICE:-15}")
PORT=${IMAGE_TEST_PORT:-8080}
PROM_PORT=${IMAGE_TEST_PROMETHEUS_PORT:-9090}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=localhost/debian-bookworm-minbase:latest
SERVICE_IMAGE=localhost/mri-classifier:cpu
TRAIN_IMAGE=localhost/mri-classifier-train:cpu
GPU_SERVICE_IMAGE=localhost/mri-classifier:gpu
GPU_TRAIN_IMAGE=localhost/mri-classifier-train:gpu
SAGEMAKER_IMAGE=localhost/mri-classifier:cpu-sagemaker
PROMETHEUS_IMAGE=localhost/prometheus-debian:latest
SAGEMAKER_SDK=${SAGEMAKER_SDK:-sagemaker==2.257.7}
SERVE_NAME=mri-image-test-serve
TIMINGS=$WORK/timings.txt
COMPOSE_PROJECT=mri-image-test
SOCKET=$WORK/podman.sock
PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(tools base build train serve build-gpu serve-gpu compose sagemaker)

export CONTAINERS_CONF=$WORK/containers.conf
SUMMARY=()
SERVICE_PID=""

log() { printf '\n[image-test %4ss] %s\n' "$SECONDS" "$*"; }
fail() { printf '\n[image-test] FAIL: %s\n' "$*" >&2; exit 1; }
passed() { SUMMARY+=("PASS  $1 ($2 s)"); printf '[image-test] PASS %s (%s s)\n' "$1" "$2"; }
elapsed() {  # elapsed WHAT START: seconds since START ($EPOCHREALTIME), logged and kept for the summary
    awk -v what="$1" -v a="$2" -v b="$EPOCHREALTIME" 'BEGIN { printf "%s: %.1f s\n", what, b - a }' | tee -a "$TIMINGS"
}
want() { local p; for p in "${PHASES[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

cleanup() {
    local rc=$?
    podman rm -f -t 0 "$SERVE_NAME" >/dev/null 2>&1 || true
    # SageMaker local mode names its containers <random>-algo-1-<random>; remove any it left behind.
    podman ps -a --filter name=algo-1 --format '{{.Names}}' 2>/dev/null | xargs -r podman rm -f -t 5 >/dev/null 2>&1 || true
    if [ -S "$SOCKET" ] && command -v docker-compose >/dev/null; then
        DOCKER_HOST=unix://$SOCKET docker-compose -p "$COMPOSE_PROJECT" down -v -t 5 >/dev/null 2>&1 || true
    fi
    if [ -n "$SERVICE_PID" ]; then kill "$SERVICE_PID" 2>/dev/null || true; fi
    printf '\n[image-test] summary after %s s:\n' "$SECONDS"
    printf '  %s\n' "${SUMMARY[@]:-nothing ran}"
    [ -s "$TIMINGS" ] && sed 's/^/  /' "$TIMINGS"
    [ "$rc" -eq 0 ] && printf '[image-test] all requested phases passed\n'
    exit "$rc"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || fail "run as root (podman rootful, apt-get, debootstrap)"
mkdir -p "$WORK"
: >"$TIMINGS"
cat > "$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

# ------------------------------------------------------------------------------------------------ tools
if want tools; then
    t=$SECONDS
    missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v docker >/dev/null || missing+=(podman-docker)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    # podman 4.3 (Debian 12) networks are CNI: compose's service names resolve only with the dnsname plugin.
    if [ ! -x /usr/lib/cni/dnsname ] && apt-cache show golang-github-containernetworking-plugin-dnsname >/dev/null 2>&1; then
        missing+=(golang-github-containernetworking-plugin-dnsname)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            uidmap slirp4netns fuse-overlayfs ca-certificates
    fi
    podman --version
    docker-compose --version
    [ -x /usr/lib/cni/dnsname ] || podman info --format '{{.Host.NetworkBackend}}' | grep -qx netavark \
        || fail "podman's CNI backend without the dnsname plugin: compose services could not find each other"
    passed tools $((SECONDS - t))
fi

# ------------------------------------------------------------------------------------------------ base image
if want base; then
    t=$SECONDS
    if podman image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE exists"
    else
        log "debootstrap --variant=minbase bookworm (Docker Hub is not needed)"
        rm -rf "$WORK/rootfs"
        "${NICE[@]}" debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
        rm -rf "$WORK"/rootfs/var/cache/apt/*.bin "$WORK"/rootfs/var/cache/apt/archives/*.deb \
            "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/usr/share/doc/* "$WORK"/rootfs/usr/share/man/*
        tar -C "$WORK/rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
        rm -rf "$WORK/rootfs"
    fi
    passed "base image" $((SECONDS - t))
fi

# ------------------------------------------------------------------------------------------------ builds
build() {  # build TARGET TAG [DOCKERFILE [EXTRA BUILD ARGS...]]
    local t=$SECONDS target=$1 tag=$2 dockerfile=${3:-docker/Dockerfile} args=()
    shift 3 2>/dev/null || shift $#
    [ -n "$target" ] && args+=(--target "$target")
    # The proxy's CA reaches pip and apt as a build secret: mounted for a RUN, never stored in a layer.
    [ -s "$CA" ] && args+=(--secret "id=ca,src=$CA")
    log "podman build ${target:+--target $target }-> $tag"
    local old_id
    old_id=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    # --format docker: the OCI image format has no HEALTHCHECK.
    "${NICE[@]}" podman build --format docker --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" "${args[@]}" "$@" \
        -f "$dockerfile" -t "$tag" . >"$WORK/build-${tag##*/}.log" 2>&1 \
        || { tail -30 "$WORK/build-${tag##*/}.log"; fail "build of $tag (log: $WORK/build-${tag##*/}.log)"; }
    # The image this tag pointed at before (GBs of virtualenv) goes; the stage images that are the cache stay.
    if [ -n "$old_id" ] && [ "$old_id" != "$(podman image inspect --format '{{.Id}}' "$tag")" ]; then
        podman rmi "$old_id" >/dev/null 2>&1 || true
    fi
    passed "build $tag" $((SECONDS - t))
}

inspect() {  # inspect IMAGE GO-TEMPLATE
    podman image inspect --format "$2" "$1"
}

if want build; then
    build train "$TRAIN_IMAGE" docker/Dockerfile
    build service-cpu "$SERVICE_IMAGE" docker/Dockerfile
    log "image metadata"
    for image in "$SERVICE_IMAGE" "$TRAIN_IMAGE"; do
        printf '%s: %s, user %s, entrypoint %s, cmd %s\n' "$image" \
            "$(inspect "$image" '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')" \
            "$(inspect "$image" '{{.Config.User}}')" "$(inspect "$image" '{{json .Config.Entrypoint}}')" \
            "$(inspect "$image" '{{json .Config.Cmd}}')"
        [ "$(inspect "$image" '{{json .Config.Entrypoint}}')" = '["mri-classifier"]' ] || fail "$image entrypoint"
        [ "$(inspect "$image" '{{.Config.User}}')" = 10001 ] || fail "$image does not run as user 10001"
        # The CA secret was mounted for the build only: nothing of it may stay in the image.
        podman run --rm --network none --entrypoint sh "$image" -c '! test -e /run/secrets/ca' \
            || fail "$image keeps the build secret"
        ! inspect "$image" '{{json .Config.Env}}' | grep -q -e PIP_CERT -e PIP_INDEX_URL \
            || fail "$image keeps build settings in its environment"
    done
    for image in "$SERVICE_IMAGE" "$TRAIN_IMAGE"; do
        size=$(inspect "$image" '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')
        printf 'image size %s: %s\n' "$image" "$size" | tee -a "$TIMINGS"
    done
    inspect "$SERVICE_IMAGE" '{{json .Config.Env}}' | grep -q '"MRI_BUILTIN_MODEL_DIR=/opt/mri-classifier/model"' \
        || fail "service image without MRI_BUILTIN_MODEL_DIR"
    inspect "$SERVICE_IMAGE" '{{json .Config.Env}}' | grep -q '"MRI_HOST=0.0.0.0"' || fail "service image MRI_HOST"
    podman run --rm --network none --entrypoint sh "$SERVICE_IMAGE" -c \
        'ls /opt/mri-classifier/model/*/saved_model.pb && [ -z "$(ls -A /opt/ml/model)" ]' >/dev/null \
        || fail "service image: no built-in model, or /opt/ml/model not empty"
    podman run --rm --network none "$SERVICE_IMAGE" --version | grep -q '^mri-classifier ' || fail "--version"
    # The recipe (package data) finds its ImageNet weights where the image put them.
    weights=$(podman run --rm --network none --entrypoint python3 "$TRAIN_IMAGE" -c \
        'from training.recipe import recipe, resolve_weights; r = recipe(); print(resolve_weights(r["backbone"], r["weights"]))') \
        || fail "train image: no recipe, or its weights are missing"
    [ "$weights" = /opt/mri-classifier/weights/efficientnet_lite0_imagenet.weights.h5 ] \
        || fail "train image: the recipe's weights resolve to $weights"
    [ "$(inspect "$SERVICE_IMAGE" '{{json .Config.Cmd}}')" = '["serve"]' ] || fail "service default command"
    [ "$(inspect "$TRAIN_IMAGE" '{{json .Config.Cmd}}')" = '["train"]' ] || fail "train default command"
    label='{{index .Config.Labels "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"}}'
    [ "$(inspect "$SERVICE_IMAGE" "$label")" = true ] || fail "SageMaker bind-to-port label"
    inspect "$SERVICE_IMAGE" '{{json .Config.Healthcheck}}' | grep -q mri-healthcheck || fail "service HEALTHCHECK"
fi

# ------------------------------------------------------------------------------------------------ train
ML=$WORK/ml
HARDENED=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)
if want train; then
    t=$SECONDS
    log "tiny synthetic dataset in the SageMaker layout ($ML)"
    rm -rf "$ML"
    mkdir -p "$ML"/{input,model,output,checkpoints}
    podman run --rm --network none -i --user 0 -v "$ML:/opt/ml" --entrypoint python3 "$TRAIN_IMAGE" - /opt/ml \
        <docker/smoke_data.py
    chown -R 10001:10001 "$ML"
    log "docker run IMAGE train (SageMaker contract; non-root, read-only root, no network)"
    if ! "${NICE[@]}" podman run --rm --network none "${HARDENED[@]}" \
        -v "$ML/input:/opt/ml/input:ro" -v "$ML/model:/opt/ml/model" \
        -v "$ML/output:/opt/ml/output" -v "$ML/checkpoints:/opt/ml/checkpoints" \
        "$TRAIN_IMAGE" train >"$WORK/train.log" 2>&1; then
        tail -30 "$WORK/train.log"
        fail "train exited non-zero: $(cat "$ML/output/failure" 2>/dev/null)"
    fi
    tail -5 "$WORK/train.log"
    [ ! -e "$ML/output/failure" ] || fail "training wrote a failure: $(cat "$ML/output/failure")"
    version=$(find "$ML/model" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' -printf '%f\n' | sort -n | tail -1)
    [ -n "$version" ] || fail "no model version in $ML/model"
    for f in saved_model.pb variables metadata.json; do
        [ -e "$ML/model/$version/$f" ] || fail "model $version lacks $f"
    done
    # The shipped recipe (train's defaults) from the image's own Lite0 weights, offline, every stage of it.
    python3 - "$ML/model/$version/metadata.json" "$ML/output/data" <<'PY' || fail "the job did not run the shipped recipe"
import json, pathlib, sys
meta = json.load(open(sys.argv[1]))
training = meta["training"]
assert training["backbone"] == "efficientnet_lite0", training["backbone"]
assert training["weights"] == "/opt/mri-classifier/weights/efficientnet_lite0_imagenet.weights.h5", training
assert training["fine_tune_from"] == "block4a" and training["crop_brain"] is True, training
assert set(meta["recipe_overrides"]) == {"epochs", "freeze_epochs", "image_size", "batch_size"}, meta["recipe_overrides"]
wise = meta["wise_ft"]
assert sorted(float(a) for a in wise["mixes"]) == training["mix_alphas"] and wise["alpha"] in training["mix_alphas"]
assert all(isinstance(meta["ood"][k], float) for k in ("max_border_brightness", "min_confidence", "max_ood_score"))
stages = [s["stage"] for s in meta["stages"]]
assert stages == ["prepare", "finetune", "probe", "mix", "temperature", "ood_bank", "export", "thresholds", "report"]
assert (pathlib.Path(sys.argv[2]) / "training_report.md").is_file()
print(f"trained {training['backbone']} from {training['weights']}, {training['epochs']} epochs, alpha {wise['alpha']}")
for s in meta["stages"]:
    print(f"  stage {s['stage']}: {s['wall_s']} s wall, {s['cpu_s']} s CPU")
PY
    log "model version $version in /opt/ml/model: $(du -sh "$ML/model/$version" | cut -f1)"
    passed "train in container" $((SECONDS - t))

    t=$SECONDS
    log "train with no training channel: must exit non-zero and explain in /opt/ml/output/failure"
    mkdir -p "$WORK/ml-bad/output" "$WORK/ml-bad/input/config"
    echo '{"epochs": "1"}' >"$WORK/ml-bad/input/config/hyperparameters.json"  # SageMaker always writes one
    chown -R 10001:10001 "$WORK/ml-bad"
    rm -f "$WORK/ml-bad/output/failure"
    if "${NICE[@]}" podman run --rm --network none "${HARDENED[@]}" -v "$WORK/ml-bad/input:/opt/ml/input:ro" \
        -v "$WORK/ml-bad/output:/opt/ml/output" "$TRAIN_IMAGE" train >"$WORK/train-bad.log" 2>&1; then
        fail "train without data exited 0"
    fi
    [ -s "$WORK/ml-bad/output/failure" ] || fail "no /opt/ml/output/failure written"
    log "failure reason: $(head -c 200 "$WORK/ml-bad/output/failure")"
    passed "train failure contract" $((SECONDS - t))
fi

# ------------------------------------------------------------------------------------------------ serve
if want serve; then
    t=$SECONDS
    log "docker run -p 8080:8080 IMAGE, nothing else: the built-in model (cold start to ready, timed)"
    podman rm -f -t 0 "$SERVE_NAME" >/dev/null 2>&1 || true
    start=$EPOCHREALTIME
    podman run -d --name "$SERVE_NAME" "${HARDENED[@]}" -p "127.0.0.1:$PORT:8080" "$SERVICE_IMAGE" >/dev/null
    python3 docker/image_checks.py wait "http://127.0.0.1:$PORT" 240 \
        || { podman logs "$SERVE_NAME" | tail -30; fail "built-in model never ready"; }
    elapsed "cold start: docker run -> ready (built-in model)" "$start"
    python3 docker/image_checks.py source "http://127.0.0.1:$PORT" built-in /opt/mri-classifier/model \
        || fail "not the built-in model"
    python3 docker/image_checks.py routes "http://127.0.0.1:$PORT" "$ML/sample.jpg" >/dev/null \
        || { podman logs "$SERVE_NAME" | tail -30; fail "built-in model routes"; }
    podman rm -f -t 5 "$SERVE_NAME" >/dev/null
    log "a broken model mounted on /opt/ml/model: not ready, and never the built-in model instead"
    mkdir -p "$WORK/broken/7" && echo "not a model" >"$WORK/broken/7/saved_model.pb"
    chmod -R a+rX "$WORK/broken"
    podman run -d --name "$SERVE_NAME" "${HARDENED[@]}" -p "127.0.0.1:$PORT:8080" \
        -v "$WORK/broken:/opt/ml/model:ro" "$SERVICE_IMAGE" >/dev/null
    python3 docker/image_checks.py failed "http://127.0.0.1:$PORT" configured /opt/ml/model 240 \
        || { podman logs "$SERVE_NAME" | tail -30; fail "a broken model was not reported, or fell back"; }
    podman rm -f -t 5 "$SERVE_NAME" >/dev/null
    passed "serve the built-in model; refuse a broken mount" $((SECONDS - t))

    t=$SECONDS
    log "docker run IMAGE serve with the trained model mounted (non-root, read-only root, tmpfs /tmp, no caps)"
    podman rm -f -t 0 "$SERVE_NAME" >/dev/null 2>&1 || true
    "${NICE[@]}" podman run -d --name "$SERVE_NAME" "${HARDENED[@]}" -p "127.0.0.1:$PORT:8080" \
        -v "$ML/model:/opt/ml/model:ro" "$SERVICE_IMAGE" serve >/dev/null
    python3 docker/image_checks.py wait "http://127.0.0.1:$PORT" 240 \
        || { podman logs "$SERVE_NAME" | tail -30; fail "service never ready"; }
    python3 docker/image_checks.py routes "http://127.0.0.1:$PORT" "$ML/sample.jpg" \
        || { podman logs "$SERVE_NAME" | tail -30; fail "route checks"; }
    python3 docker/image_checks.py source "http://127.0.0.1:$PORT" configured /opt/ml/model \
        || fail "the mounted model does not win over the built-in one"
    trained=$(find "$ML/model" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' -printf '%f\n' | sort -n | tail -1)
    python3 docker/image_checks.py version "http://127.0.0.1:$PORT" "$trained" \
        || fail "the served version is not its folder's number"
    podman healthcheck run "$SERVE_NAME" >/dev/null || fail "HEALTHCHECK reports unhealthy"
    [ "$(podman exec "$SERVE_NAME" id -u)" = 10001 ] || fail "service is not running as 10001"
    if podman exec "$SERVE_NAME" sh -c 'touch /opt/ml/x || touch /usr/x' 2>/dev/null; then
        fail "root filesystem is writable"
    fi
    log "HEALTHCHECK healthy; uid 10001; root filesystem read-only"
    log "SIGTERM: the service must drain and exit 0 within SageMaker's 30 s"
    t0=$SECONDS
    podman kill --signal TERM "$SERVE_NAME" >/dev/null
    code=$(timeout 40 podman wait "$SERVE_NAME" || echo timeout)
    podman logs "$SERVE_NAME" 2>&1 | tail -5
    [ "$code" = 0 ] || fail "exit status after SIGTERM: $code"
    log "exited 0 after $((SECONDS - t0)) s"
    podman rm -f "$SERVE_NAME" >/dev/null
    passed "serve in container (routes, healthcheck, SIGTERM)" $((SECONDS - t))

    t=$SECONDS
    log "fetch-model in the service image (the Kubernetes init container): download of model.tar.gz (--allow-http: a local server)"
    rm -rf "$WORK/www" "$WORK/fetched" && mkdir -p "$WORK/www" "$WORK/fetched"
    version=$(find "$ML/model" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' -printf '%f\n' | sort -n | tail -1)
    tar -C "$ML/model" -czf "$WORK/www/model.tar.gz" "$version"
    chown 10001 "$WORK/fetched"
    python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" 8765 >/dev/null 2>&1 &
    WWW_PID=$!
    sleep 1
    podman run --rm --network host "${HARDENED[@]}" -v "$WORK/fetched:/opt/ml/model" "$SERVICE_IMAGE" \
        fetch-model --allow-http http://127.0.0.1:8765/model.tar.gz /opt/ml/model || { kill "$WWW_PID"; fail "fetch-model"; }
    kill "$WWW_PID"
    [ -s "$WORK/fetched/$version/saved_model.pb" ] || fail "fetch-model left no model"
    passed "fetch-model (init container) in the service image" $((SECONDS - t))
fi

# ------------------------------------------------------------------------------------------------ GPU images
# Built like the CPU images (same Debian base, same stages) with TensorFlow's CUDA build and its CUDA wheels from
# requirements/gpu.lock and train-gpu.lock; run here without a GPU (none on this machine).
if want build-gpu; then
    build train-gpu "$GPU_TRAIN_IMAGE" docker/Dockerfile
    build service-gpu "$GPU_SERVICE_IMAGE" docker/Dockerfile
    for image in "$GPU_SERVICE_IMAGE" "$GPU_TRAIN_IMAGE"; do
        size=$(inspect "$image" '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')
        printf 'image size %s: %s\n' "$image" "$size" | tee -a "$TIMINGS"
        [ "$(inspect "$image" '{{json .Config.Entrypoint}}')" = '["mri-classifier"]' ] || fail "$image entrypoint"
        [ "$(inspect "$image" '{{.Config.User}}')" = 10001 ] || fail "$image does not run as user 10001"
        env_json=$(inspect "$image" '{{json .Config.Env}}')
        grep -q '"NVIDIA_DRIVER_CAPABILITIES=compute,utility"' <<<"$env_json" || fail "$image: no NVIDIA variables"
        ! grep -q -e TF_FORCE_GPU_ALLOW_GROWTH -e PIP_CERT -e PIP_INDEX_URL <<<"$env_json" \
            || fail "$image keeps a variable that overrides the settings, or a build setting"
        # TensorFlow's CUDA build with its CUDA libraries, and no tensorflow-cpu beside it.
        podman run --rm --network none --entrypoint python "$image" -c '
import importlib.metadata as m, tensorflow as tf
assert tf.sysconfig.get_build_info()["is_cuda_build"], "not a CUDA build"
names = {d.metadata["Name"] for d in m.distributions()}
assert "tensorflow-cpu" not in names and "nvidia-cudnn-cu12" in names, sorted(names)
print("TensorFlow", tf.__version__, "CUDA", tf.sysconfig.get_build_info()["cuda_version"])' \
            || fail "$image: not TensorFlow's CUDA build with its CUDA wheels"
    done
    gpu_weights=$(podman run --rm --network none --entrypoint python3 "$GPU_TRAIN_IMAGE" -c \
        'from training.recipe import recipe, resolve_weights; r = recipe(); print(resolve_weights(r["backbone"], r["weights"]))') \
        || fail "GPU train image: no recipe, or its weights are missing"
    [ "$gpu_weights" = /opt/mri-classifier/weights/efficientnet_lite0_imagenet.weights.h5 ] \
        || fail "GPU train image: the recipe's weights resolve to $gpu_weights"
    inspect "$GPU_SERVICE_IMAGE" '{{json .Config.Healthcheck}}' | grep -q mri-healthcheck || fail "GPU service HEALTHCHECK"
fi

if want serve-gpu; then
    t=$SECONDS
    [ -s "$ML/sample.jpg" ] || { mkdir -p "$ML" && podman run --rm --network none -i --user 0 -v "$ML:/opt/ml" \
        --entrypoint python3 "$GPU_TRAIN_IMAGE" - /opt/ml <docker/smoke_data.py; }
    log "docker run IMAGE (GPU image) with no GPU: OpenVINO on the CPU, /predict answers, /readyz says why"
    podman rm -f -t 0 "$SERVE_NAME" >/dev/null 2>&1 || true
    start=$EPOCHREALTIME
    podman run -d --name "$SERVE_NAME" "${HARDENED[@]}" -p "127.0.0.1:$PORT:8080" "$GPU_SERVICE_IMAGE" >/dev/null
    python3 docker/image_checks.py wait "http://127.0.0.1:$PORT" 240 \
        || { podman logs "$SERVE_NAME" | tail -30; fail "GPU image never ready without a GPU"; }
    elapsed "cold start: GPU image without a GPU -> ready (built-in model)" "$start"
    python3 docker/image_checks.py runtime "http://127.0.0.1:$PORT" openvino "no NVIDIA GPU visible" \
        || { podman logs "$SERVE_NAME" | tail -30; fail "GPU image without a GPU: not OpenVINO, or no reason"; }
    python3 docker/image_checks.py source "http://127.0.0.1:$PORT" built-in /opt/mri-classifier/model \
        || fail "GPU image: not the built-in model"
    python3 docker/image_checks.py routes "http://127.0.0.1:$PORT" "$ML/sample.jpg" >/dev/null \
        || { podman logs "$SERVE_NAME" | tail -30; fail "GPU image routes (/predict, /invocations)"; }
    podman logs "$SERVE_NAME" >"$WORK/gpu-serve.log" 2>&1
    grep -q 'runtime: openvino on CPU: no NVIDIA GPU visible' "$WORK/gpu-serve.log" \
        || fail "GPU image: the load log line does not say why it runs on the CPU"
    podman rm -f -t 5 "$SERVE_NAME" >/dev/null
    log "a TF_FORCE_GPU_ALLOW_GROWTH that contradicts MRI_GPU_MEMORY_GROWTH is refused at start"
    if podman run --rm --network none -e TF_FORCE_GPU_ALLOW_GROWTH=false "$GPU_SERVICE_IMAGE" serve \
        >"$WORK/gpu-conflict.log" 2>&1; then
        fail "the GPU image started with TF_FORCE_GPU_ALLOW_GROWTH=false against MRI_GPU_MEMORY_GROWTH=true"
    fi
    grep -q 'contradicts MRI_GPU_MEMORY_GROWTH' "$WORK/gpu-conflict.log" || fail "no reason given for the refusal"
    passed "GPU image without a GPU: OpenVINO fallback, /predict, /readyz reason" $((SECONDS - t))
fi

start_socket() {  # a Docker-compatible API for docker-compose v1 and the SageMaker SDK
    if [ -z "$SERVICE_PID" ]; then
        rm -f "$SOCKET"
        podman system service --time=0 "unix://$SOCKET" >"$WORK/podman-service.log" 2>&1 &
        SERVICE_PID=$!
        for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.2; done
        [ -S "$SOCKET" ] || fail "podman system service did not start"
    fi
    export DOCKER_HOST=unix://$SOCKET
}

# ------------------------------------------------------------------------------------------------ compose
if want compose; then
    t=$SECONDS
    build "" "$PROMETHEUS_IMAGE" docker/prometheus.Dockerfile
    start_socket
    # A plain `docker compose up -d`: nothing set but where the images are (Docker Hub is out of reach here, so
    # the locally built images stand in for the tags; grafana's image has no stand-in) and the ports.
    log "docker-compose up -d api prometheus: the repository's docker-compose.yml as is, against podman"
    unset MODEL_SOURCE MRI_MODEL_DIR
    export MRI_IMAGE=$SERVICE_IMAGE PROMETHEUS_IMAGE API_PORT=$PORT PROMETHEUS_PORT=$PROM_PORT
    docker-compose -p "$COMPOSE_PROJECT" down -v -t 5 >/dev/null 2>&1 || true
    docker-compose -p "$COMPOSE_PROJECT" config -q
    start=$EPOCHREALTIME
    "${NICE[@]}" docker-compose -p "$COMPOSE_PROJECT" up -d --no-build api prometheus
    python3 docker/image_checks.py wait "http://127.0.0.1:$PORT" 240 \
        || { docker-compose -p "$COMPOSE_PROJECT" logs --tail 30; fail "compose api never ready"; }
    elapsed "cold start: docker-compose up -d -> api ready" "$start"
    python3 docker/image_checks.py source "http://127.0.0.1:$PORT" built-in /opt/mri-classifier/model \
        || fail "compose api does not serve the built-in model"
    python3 docker/image_checks.py routes "http://127.0.0.1:$PORT" "$ML/sample.jpg" >/dev/null \
        || fail "compose api routes"
    python3 docker/image_checks.py prometheus "http://127.0.0.1:$PROM_PORT" \
        'mri_predictions_total{job="mri-classifier"}' 120 \
        || { docker-compose -p "$COMPOSE_PROJECT" logs --tail 30 prometheus; fail "Prometheus scrape"; }
    docker-compose -p "$COMPOSE_PROJECT" down -v -t 30 >/dev/null 2>&1
    passed "compose: api + prometheus scrape" $((SECONDS - t))
fi

# ------------------------------------------------------------------------------------------------ sagemaker
if want sagemaker; then
    t=$SECONDS
    [ -d "$ML/model" ] && [ -s "$ML/sample.jpg" ] || fail "no trained model in $ML: run the train phase first"
    start_socket
    log "SageMaker SDK ($SAGEMAKER_SDK) local mode: deploy, predict, delete"
    if [ ! -x "$WORK/sm-venv/bin/python" ] || ! "$WORK/sm-venv/bin/pip" show sagemaker >/dev/null 2>&1; then
        python3 -m venv "$WORK/sm-venv"
        "${NICE[@]}" "$WORK/sm-venv/bin/pip" install -q "$SAGEMAKER_SDK" pillow
    fi
    # SageMaker runs containers as root and unpacks the model into a root-only folder: its image variant.
    build service-cpu "$SAGEMAKER_IMAGE" docker/Dockerfile --build-arg RUNTIME_USER=0
    [ "$(inspect "$SAGEMAKER_IMAGE" '{{.Config.User}}')" = 0 ] || fail "RUNTIME_USER=0 is not honoured"
    rm -rf "$WORK/sm" && mkdir -p "$WORK/sm"
    podman run --rm --network none -v "$ML/model:/m:ro" -v "$WORK/sm:/out" "$SAGEMAKER_IMAGE" \
        sagemaker package --model-dir /m --output /out/model.tar.gz
    (
        cd "$WORK/sm"
        # Dummy credentials; any stray call to AWS meets a dead proxy instead of leaving the machine.
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
            AWS_EC2_METADATA_DISABLED=true HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
            NO_PROXY=localhost,127.0.0.1 SAGEMAKER_LOCAL_PORT=$PORT \
            "${NICE[@]}" "$WORK/sm-venv/bin/python" "$ROOT/docker/sagemaker_local_e2e.py" \
            "$SAGEMAKER_IMAGE" "$WORK/sm/model.tar.gz" "$ML/sample.jpg"
    ) || fail "SageMaker local mode"
    passed "SageMaker local mode: deploy, predict, delete" $((SECONDS - t))
fi
