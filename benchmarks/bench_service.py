"""Benchmark the inference service against the raw model and two peers; prints a Markdown table.

Same model, same machine, same run:

* raw SavedModel in process (TensorFlow signature) at batch 1 and at the service's max batch;
* OpenVINO raw in process (the service's CPU runtime) at the same batch sizes;
* the service (``mri-classifier serve``) over loopback HTTP at concurrency 1, 8 and 32 (multipart uploads);
* a naive peer: a minimal FastAPI app that calls the Keras model's ``predict`` per request;
* LitServe with its own batching (max batch 8, 5 ms) serving the same SavedModel through TensorFlow.

The load generator is a minimal asyncio HTTP/1.1 client over keep-alive connections with pre-built requests,
so that it takes as little CPU as possible from the servers it measures. Use a trained model: a randomly
initialised one makes every runtime look several times faster than it is.

    nice -n 5 .venv/bin/python benchmarks/bench_service.py --model-dir models/mri-classifier
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, UploadFile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.config import Settings  # noqa: E402
from service.imaging.preprocessing import PreprocessConfig, preprocess  # noqa: E402
from service.inference.classifier import read_metadata  # noqa: E402
from service.inference.runtime import inference_streams  # noqa: E402
from service.inference.versions import find_version_dir  # noqa: E402

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "brain-tumor-mri" / "Testing"
BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"


@dataclass
class Result:
    name: str
    setting: str
    images_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


# ----------------------------------------------------------------------------------------------- inputs


def generated_jpegs(count: int, size: int = 512) -> list[bytes]:
    """MRI-like slices (a textured ellipse with a bright lesion on black), as JPEG files."""
    rng = np.random.default_rng(0)
    out = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(count):
        brain = ((yy - 0.5) / rng.uniform(0.33, 0.43)) ** 2 + ((xx - 0.5) / rng.uniform(0.28, 0.38)) ** 2 < 1
        image = np.where(brain, 70 + 20 * np.sin(rng.uniform(5, 20) * xx) + rng.normal(0, 10, brain.shape), 0)
        ly, lx = rng.uniform(0.3, 0.7, 2)
        image += 120 * ((((yy - ly) ** 2 + (xx - lx) ** 2) < 0.01) & brain)
        gray = np.clip(image, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(gray).convert("RGB").save(buf, format="JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def load_images(folder: Path | None, count: int) -> tuple[list[bytes], str]:
    """Up to ``count`` JPEG files from ``folder`` (searched recursively), else generated ones."""
    if folder is not None and folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[::3][:count]
        if files:
            return [p.read_bytes() for p in files], f"{len(files)} JPEGs from {folder}"
    return generated_jpegs(count), f"{count} generated 512x512 MRI-like JPEGs"


def multipart_request(path: str, port: int, data: bytes, field: str = "file") -> bytes:
    """A complete HTTP/1.1 request uploading ``data`` as multipart field ``field``."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="scan.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


# ------------------------------------------------------------------------------------------ load generator


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value)
        elif key.strip().lower() == "transfer-encoding":
            raise RuntimeError("chunked responses are not supported by this load generator")
    await reader.readexactly(length)
    return status


async def _load(port: int, requests: list[bytes], concurrency: int, duration: float, warmup: int) -> tuple:
    latencies: list[float] = []
    errors = 0
    done = 0

    async def worker(index: int, deadline: float | None, count: int | None) -> None:
        nonlocal errors, done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = index
        try:
            while (deadline is None or time.perf_counter() < deadline) and (count is None or count > 0):
                started = time.perf_counter()
                status = await _one(reader, writer, requests[i % len(requests)])
                if deadline is not None:
                    latencies.append(time.perf_counter() - started)
                    done += 1
                    errors += status != 200
                if count is not None:
                    count -= 1
                i += concurrency
        finally:
            writer.close()

    await asyncio.gather(*(worker(i, None, warmup) for i in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(worker(i, started + duration, None) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return done / elapsed, latencies, errors


def process_tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (Linux /proc)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    return total


def http_bench(
    name: str,
    port: int,
    path: str,
    images: list[bytes],
    levels: Sequence[int],
    duration: float,
    warmup: int = 0,
    pid: int | None = None,
) -> list[Result]:
    """Warm the server with ``warmup`` requests at the highest concurrency, then time each level."""
    requests = [multipart_request(path, port, data) for data in images]
    results = []
    if warmup:
        top = max(levels)
        asyncio.run(_load(port, requests, top, 0.001, warmup=max(1, warmup // top)))
    for concurrency in levels:
        rate, latencies, errors = asyncio.run(_load(port, requests, concurrency, duration, warmup=2))
        results.append(
            Result(
                name, f"concurrency {concurrency}", rate, percentile(latencies, 50), percentile(latencies, 99), errors
            )
        )
        print(f"  {name} c={concurrency}: {rate:.1f} img/s", file=sys.stderr)
    if pid is not None:
        rss = process_tree_rss(pid) / 2**20
        results = [dataclasses.replace(r, name=f"{r.name} [RSS {rss:.0f} MiB]") for r in results]
    return results


# -------------------------------------------------------------------------------------------- in process


def time_calls(fn: Callable[[], object], batch: int, duration: float) -> tuple[float, list[float]]:
    fn()
    fn()
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < duration or len(latencies) < 5:
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
    return batch * len(latencies) / (time.perf_counter() - started), latencies


def raw_tensorflow(version_dir: Path, inputs: np.ndarray, batches: Sequence[int], duration: float) -> list[Result]:
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    results = []
    for batch in batches:
        x = tf.constant(inputs[:batch].astype(np.float32))
        rate, lat = time_calls(partial(lambda t: fn(images=t)["probabilities"].numpy(), x), batch, duration)
        results.append(
            Result("raw SavedModel (TF signature)", f"batch {batch}", rate, percentile(lat, 50), percentile(lat, 99))
        )
        print(f"  raw TF b={batch}: {rate:.1f} img/s", file=sys.stderr)
    return results


def _concurrent_calls(fns: Sequence[Callable[[], object]], batch: int, duration: float) -> tuple[float, list[float]]:
    """``time_calls`` with one thread per function, all at once (each an OpenVINO stream's request)."""
    if len(fns) == 1:
        return time_calls(fns[0], batch, duration)
    import threading

    latencies: list[float] = []
    for fn in fns:
        fn()
    started = time.perf_counter()

    def loop(fn: Callable[[], object]) -> None:
        while time.perf_counter() - started < duration:
            t0 = time.perf_counter()
            fn()
            latencies.append(time.perf_counter() - t0)  # list.append is atomic

    threads = [threading.Thread(target=loop, args=(fn,)) for fn in fns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return batch * len(latencies) / (time.perf_counter() - started), latencies


def raw_openvino(
    version_dir: Path, inputs: np.ndarray, batches: Sequence[int], duration: float, precision: str, streams: int
) -> list[Result]:
    """The converted model alone, uint8 input converted in the graph (as the service feeds it): the latency
    hint with one caller, and (``streams`` > 1) the throughput hint with one caller per stream."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    core = ov.Core()
    ppp = PrePostProcessor(ov.convert_model(str(version_dir)))
    ppp.input(0).tensor().set_element_type(ov.Type.u8)
    ppp.input(0).preprocess().convert_element_type(ov.Type.f32)
    model = ppp.build()
    modes: list[tuple[str, dict[str, object], int]] = [("latency", {"PERFORMANCE_HINT": "LATENCY"}, 1)]
    if streams > 1:
        modes.append((f"{streams} streams", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}, streams))
    results = []
    for mode, config, callers in modes:
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = precision
        compiled = core.compile_model(model, "CPU", config)
        used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        requests = [compiled.create_infer_request() for _ in range(callers)]
        for batch in batches:
            x = np.ascontiguousarray(inputs[:batch], dtype=np.uint8)
            rate, lat = _concurrent_calls([partial(r.infer, {0: x}) for r in requests], batch, duration)
            name = f"OpenVINO raw ({used}, {mode})"
            results.append(Result(name, f"batch {batch}", rate, percentile(lat, 50), percentile(lat, 99)))
            print(f"  {name} b={batch}: {rate:.1f} img/s", file=sys.stderr)
    return results


# ------------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess, waited for until its health URL answers 200; stopped with SIGTERM."""

    def __init__(self, command: list[str], port: int, health: str, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)  # noqa: SIM115
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=tempfile.gettempdir(),
            start_new_session=True,  # its own process group: worker processes are stopped with it
        )
        import urllib.error
        import urllib.request

        deadline = started + 600
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[:3]} exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"server not ready after 600 s; see {self.log.name}")
        self.ready_after = time.perf_counter() - started

    def stop(self) -> None:
        """SIGTERM to the server's process group; SIGKILL what is left after 30 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def serve_naive(version_dir: Path, port: int) -> None:
    """The shape most tutorials use: Keras ``model.predict`` on each request, inside the async handler."""
    import keras
    import uvicorn

    size = PreprocessConfig.from_dict(read_metadata(version_dir)["preprocessing"]).image_size
    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.TFSMLayer(str(version_dir), call_endpoint="serving_default")(inputs)
    model = keras.Model(inputs, outputs["probabilities"])
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> dict[str, list[float]]:  # noqa: B008
        image = Image.open(io.BytesIO(await file.read())).convert("RGB").resize((size, size))
        probs = model.predict(np.asarray(image, dtype=np.float32)[None], verbose=0)[0]
        return {"probabilities": probs.tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


try:  # LitServe is a dev dependency; its API class must live at module level to reach its worker process
    import litserve as ls
except ImportError:  # pragma: no cover
    ls = None

if ls is not None:

    class MRIClassifierAPI(ls.LitAPI):  # type: ignore[misc]
        """LitServe API: our preprocessing, the SavedModel's signature through TensorFlow, LitServe batching."""

        def __init__(self, version_dir: Path, config: PreprocessConfig, **kwargs: object) -> None:
            super().__init__(**kwargs)
            self.version_dir = version_dir
            self.config = config

        def setup(self, device: str) -> None:
            import tensorflow as tf

            self.tf = tf
            self.fn = tf.saved_model.load(str(self.version_dir)).signatures["serving_default"]

        def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe passes the form
            return preprocess(request["file"].file.read(), self.config)

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.stack(inputs)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.fn(images=self.tf.constant(x, self.tf.float32))["probabilities"].numpy()

        def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
            return list(output)

        def encode_response(self, output):  # type: ignore[no-untyped-def]  # LitServe reads these annotations
            return {"probabilities": output.tolist()}

    class OpenVINOClassifierAPI(MRIClassifierAPI):
        """The peer a capable user writes in an afternoon: the same OpenVINO-compiled model as the service
        (latency hint, same precision), LitServe's batching, a plain decode + pad + resize (no brain crop)."""

        precision = "auto"

        def setup(self, device: str) -> None:
            import openvino as ov

            config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
            if self.precision != "auto":
                config["INFERENCE_PRECISION_HINT"] = self.precision
            self.compiled = ov.Core().compile_model(ov.convert_model(str(self.version_dir)), "CPU", config)
            self.request = self.compiled.create_infer_request()
            self.plain = PreprocessConfig(image_size=self.config.image_size)

        def decode_request(self, request):  # type: ignore[no-untyped-def]
            return preprocess(request["file"].file.read(), self.plain)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.array(self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})[0])


def serve_litserve(
    version_dir: Path,
    port: int,
    max_batch_size: int,
    batch_timeout: float,
    runtime: str = "tensorflow",
    precision: str = "auto",
) -> None:
    """LitServe with its own batching serving the same model (what a user might pick instead), through
    TensorFlow or through the same OpenVINO-compiled model as the service."""
    if ls is None:
        raise SystemExit("litserve is not installed (pip install litserve)")
    config = PreprocessConfig.from_dict(read_metadata(version_dir)["preprocessing"])
    kind = OpenVINOClassifierAPI if runtime == "openvino" else MRIClassifierAPI
    kind.precision = precision
    api = kind(version_dir, config, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, num_api_servers=1, log_level="warning")


# --------------------------------------------------------------------------------------------------- main


def print_table(results: list[Result], header: list[str]) -> None:
    print("\n".join(header))
    print()
    print("| setup | load | images/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.name} | {r.setting} | {r.images_per_s:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} |")


LITSERVE_OV = "LitServe (batch 8, 5 ms, OpenVINO"


def ratios(results: list[Result], max_batch: int) -> list[str]:
    def get(name_prefix: str, setting: str) -> Result | None:
        return next((r for r in results if r.name.startswith(name_prefix) and r.setting == setting), None)

    lines = []
    service8 = get("service", "concurrency 8")
    service1 = get("service", "concurrency 1")
    raw_tf_max = get("raw SavedModel", f"batch {max_batch}")
    raw_tf_1 = get("raw SavedModel", "batch 1")
    # the raw runtime at its best: the faster configuration at the max batch, the latency hint for one image
    ov_max = max(
        (r for r in results if r.name.startswith("OpenVINO raw") and r.setting == f"batch {max_batch}"),
        key=lambda r: r.images_per_s,
        default=None,
    )
    ov_1 = get("OpenVINO raw", "batch 1")
    service32 = get("service", "concurrency 32")
    pairs = [
        ("service c8 / OpenVINO raw at max batch (goal >= 0.5)", service8, ov_max),
        ("service c32 / OpenVINO raw at max batch (goal >= 0.6)", service32, ov_max),
        ("service c8 / TF signature at max batch", service8, raw_tf_max),
        ("service c8 / naive peer c8", service8, get("naive", "concurrency 8")),
        ("service c8 / LitServe (TF) c8", service8, get("LitServe (batch 8, 5 ms, TF)", "concurrency 8")),
        (
            "service c8 / LitServe (OpenVINO) c8 (goal >= 1.5)",
            service8,
            get("LitServe (batch 8, 5 ms, OpenVINO", "concurrency 8"),
        ),
        ("OpenVINO raw b1 / TF signature b1", ov_1, raw_tf_1),
    ]
    for label, a, b in pairs:
        if a and b and b.images_per_s > 0:
            lines.append(f"- {label}: {a.images_per_s / b.images_per_s:.2f}x")
    if service1 and ov_1:
        lines.append(
            f"- service p50 at c1 minus OpenVINO raw p50 at b1 (goal <= +2 ms): {service1.p50_ms - ov_1.p50_ms:+.1f} ms"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "mri-classifier")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEGs (else generated)")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--openvino-precision", default="auto", choices=["auto", "f32", "bf16", "f16"])
    parser.add_argument(
        "--skip", default="", help="comma list of: raw,openvino,service,naive,litserve,litserve-openvino"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1000,
        help="requests sent to each server before it is timed (OpenVINO compiles each new batch shape on first use)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        help="another checkout of this project (e.g. a git worktree of main) whose service is measured in the same "
        "run, for before/after comparisons",
    )
    parser.add_argument("--serve-peer", choices=["naive", "litserve", "litserve-openvino"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model_dir = args.model_dir.resolve()  # servers run from another working directory
    version_dir = find_version_dir(args.model_dir)
    if args.serve_peer == "naive":
        serve_naive(version_dir, args.port)
        return 0
    if args.serve_peer in ("litserve", "litserve-openvino"):
        runtime = "openvino" if args.serve_peer == "litserve-openvino" else "tensorflow"
        serve_litserve(version_dir, args.port, args.max_batch_size, 0.005, runtime, args.openvino_precision)
        return 0

    metadata = read_metadata(version_dir)
    config = PreprocessConfig.from_dict(metadata["preprocessing"])
    images, source = load_images(args.images, args.num_images)
    inputs = np.stack([preprocess(data, config) for data in images[: max(args.max_batch_size, 1)]])
    levels = [int(c) for c in args.concurrency.split(",") if c]
    batches = sorted({1, args.max_batch_size})
    skip = set(filter(None, args.skip.split(",")))
    results: list[Result] = []
    header = [
        f"Model: {version_dir} ({metadata.get('model_name')} v{metadata.get('version')}, "
        f"{metadata.get('backbone', 'backbone ?')}, input {config.image_size}px)",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; images: {source}; "
        f"{args.duration:.0f} s per measurement; service max batch {args.max_batch_size}, "
        f"max wait {args.max_wait_ms} ms; load average before the run {os.getloadavg()[0]:.1f}",
    ]
    print(header[0], file=sys.stderr)

    if "raw" not in skip:
        results += raw_tensorflow(version_dir, inputs, batches, args.duration)
    if "openvino" not in skip:
        streams = inference_streams(Settings(runtime="openvino"))
        results += raw_openvino(version_dir, inputs, batches, args.duration, args.openvino_precision, streams)

    services = [] if "service" in skip else [("service (mri-classifier serve)", REPO)]
    services += [(f"baseline service ({checkout.name})", checkout.resolve()) for checkout in args.baseline]
    for name, checkout in services:
        port = free_port()
        env = {
            "PYTHONPATH": str(checkout),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "MRI_MAX_BATCH_SIZE": str(args.max_batch_size),
            "MRI_MAX_WAIT_MS": str(args.max_wait_ms),
            "MRI_OPENVINO_PRECISION": args.openvino_precision,
            "MRI_LOG_LEVEL": "warning",
        }
        command = [sys.executable, "-m", "training.cli", "serve", "--model-dir", str(args.model_dir)]
        server = Server([*command, "--host", "127.0.0.1", "--port", str(port)], port, "/readyz", env)
        header.append(f"{name}: cold start to ready {server.ready_after:.1f} s")
        try:
            results += http_bench(
                name, port, "/predict", images, levels, args.duration, args.warmup, server.process.pid
            )
        finally:
            server.stop()
    peers = [
        ("naive", "naive FastAPI + Keras predict", "/health"),
        ("litserve", "LitServe (batch 8, 5 ms, TF)", "/health"),
        ("litserve-openvino", "LitServe (batch 8, 5 ms, OpenVINO, no crop)", "/health"),
    ]
    for key, name, health in peers:
        if key in skip:
            continue
        port = free_port()
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-peer",
            key,
            "--port",
            str(port),
            "--model-dir",
            str(args.model_dir),
            "--max-batch-size",
            str(args.max_batch_size),
            "--openvino-precision",
            args.openvino_precision,
        ]
        server = Server(command, port, health, {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
        try:
            results += http_bench(
                name, port, "/predict", images, levels, args.duration, args.warmup, server.process.pid
            )
        finally:
            server.stop()

    print_table(results, header)
    lines = ratios(results, args.max_batch_size)
    if lines:
        print("\nRatios:")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
