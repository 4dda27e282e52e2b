"""Overload test: drive a real ``mri-classifier serve`` on loopback at a multiple of its measured capacity.

1. Start the server (``--model-dir``; or use ``--url`` and ``--pid`` of one already running) and wait for /readyz.
2. Measure its capacity: a closed loop of ``--workers`` clients for ``--capacity-seconds`` (images/s of 200s).
3. Open loop at ``--overload`` x capacity (or ``--rate``) for ``--duration`` seconds: one ``POST /invocations``
   of a real JPEG per arrival, arrivals at fixed intervals, latency measured from the scheduled arrival. The
   default client speaks HTTP/1.1 over asyncio streams with keep-alive (``--client httpx`` for httpx, which
   costs several times more CPU per request: on a small machine it, not the server, sets the pace); the
   client reports how far it fell behind its schedule.
4. Print the figures: counts by answer, p50/p90/p99/max of the 200s, the resident memory of the server before
   and after, and a verdict on the guarantees (every answer 200, or 503 with Retry-After; p99 of the 200s
   within the time to serve what the queue and the concurrency limit admit ahead of a request, plus one batch,
   at the rate served during the overload; memory after within 10% of before). Exit 1 when one is broken.

    nice -n 10 .venv/bin/python benchmarks/load.py --model-dir models/mri-classifier --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import httpx
import numpy as np

SHARED_TESTING = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri" / "Testing"


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_image(path: str | None) -> tuple[bytes, str]:
    """The JPEG to send: ``path``, else one from the dataset's Testing folder, else a generated 512 x 512 slice."""
    if path:
        return Path(path).read_bytes(), path
    if SHARED_TESTING.is_dir():
        found = sorted(SHARED_TESTING.glob("*/*.jpg"))
        if found:
            return found[len(found) // 2].read_bytes(), str(found[len(found) // 2])
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512] / 512
    brain = ((yy - 0.5) / 0.4) ** 2 + ((xx - 0.5) / 0.33) ** 2 < 1
    gray = np.clip(np.where(brain, 90 + rng.normal(0, 20, (512, 512)), 0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue(), "generated 512x512 JPEG"


class Server:
    """``mri-classifier serve`` in a subprocess on a free loopback port (its log in a temporary file)."""

    def __init__(self, model_dir: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="mri-load-", suffix=".log")[1])
        script = shutil.which("mri-classifier", path=str(Path(sys.executable).parent))
        command = [script] if script else [sys.executable, "-m", "training.cli"]
        full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, "serve", "--model-dir", model_dir, "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
            )

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)


async def wait_ready(client: httpx.AsyncClient, url: str, timeout: float = 600) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = await client.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return dict(response.json()["model"])
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not ready within {timeout} s")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]


class RawClient:
    """Keep-alive HTTP/1.1 over asyncio streams, a request prebuilt once: several times cheaper per request than
    httpx, so that a Python client sharing a small machine with the server can still generate the overload."""

    def __init__(self, url: str, image: bytes, max_connections: int) -> None:
        host_port = url.split("//", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(image)}\r\n\r\n"
        )
        self.request = head.encode() + image
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(max_connections)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Answer | None:
        writer.write(self.request)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            return None  # the server closed this idle connection
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        await reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(status_line.split()[1]), headers)

    async def invoke(self) -> Answer:
        async with self.slots:
            for attempt in range(2):  # an idle connection may have been closed by the server's keep-alive timeout
                reused = bool(self.idle) and attempt == 0  # the retry always takes a fresh connection
                reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
                try:
                    answer = await self._exchange(reader, writer)
                except (OSError, asyncio.IncompleteReadError):
                    writer.close()
                    if reused:
                        continue
                    raise
                if answer is None:
                    writer.close()
                    continue
                if answer.headers.get("connection", "").lower() == "close":
                    writer.close()
                else:
                    self.idle.append((reader, writer))
                return answer
            raise ConnectionError("the server closed the connection without answering")

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


class HttpxClient:
    """The same requests with httpx (heavier: at high rates the client itself becomes the bottleneck)."""

    def __init__(self, client: httpx.AsyncClient, url: str, image: bytes) -> None:
        self.client, self.url, self.image = client, url, image

    async def invoke(self) -> Answer:
        response = await self.client.post(
            f"{self.url}/invocations", content=self.image, headers={"Content-Type": "image/jpeg"}
        )
        return Answer(response.status_code, dict(response.headers))

    def close(self) -> None:
        pass


Invoker = RawClient | HttpxClient


async def measure_capacity(client: Invoker, workers: int, seconds: float) -> float:
    """Images/s answered 200 by a closed loop of ``workers`` clients."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            if (await client.invoke()).status == 200:
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / (time.monotonic() - started)


@dataclass
class Outcome:
    statuses: Counter[str] = field(default_factory=Counter)
    ok_latencies: list[float] = field(default_factory=list)
    ok_arrivals: list[float] = field(default_factory=list)  # seconds into the run, per 200
    busy_latencies: list[float] = field(default_factory=list)
    busy_without_retry_after: int = 0
    send_lags: list[float] = field(default_factory=list)  # scheduled arrival -> the client starts the request


async def overload(client: Invoker, rate: float, seconds: float, timeout: float) -> tuple[Outcome, float]:
    """Open loop: one request every 1/rate s for ``seconds``; returns the outcome and the achieved send rate."""
    outcome = Outcome()
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()

    async def one(scheduled: float) -> None:
        outcome.send_lags.append(time.monotonic() - scheduled)
        try:
            answer = await asyncio.wait_for(client.invoke(), timeout)
        except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            outcome.statuses[type(exc).__name__] += 1
            return
        latency = time.monotonic() - scheduled
        outcome.statuses[str(answer.status)] += 1
        if answer.status == 200:
            outcome.ok_latencies.append(latency)
            outcome.ok_arrivals.append(scheduled - started)
        elif answer.status == 503:
            outcome.busy_latencies.append(latency)
            if "retry-after" not in answer.headers:
                outcome.busy_without_retry_after += 1

    count = int(rate * seconds)
    for index in range(count):
        scheduled = started + index / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    achieved = count / (time.monotonic() - started)
    await asyncio.gather(*tasks)
    return outcome, achieved


def windows(outcome: Outcome, duration: float, width: float = 10.0) -> list[float]:
    """p99 latency (ms) of the 200s by arrival window: flat when the latency is bounded, rising when it is not."""
    latencies = np.array(outcome.ok_latencies)
    arrivals = np.array(outcome.ok_arrivals)
    edges = np.arange(0.0, duration + width / 2, width)
    return [round(percentile(list(latencies[(arrivals >= a) & (arrivals < b)]), 99), 1) for a, b in pairwise(edges)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def scrape(metrics: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name + " "))


def stage_means(before: str, after: str) -> dict[str, float]:
    """Mean seconds per observation of each pipeline stage between two scrapes (``mri_stage_duration_seconds``)."""
    means = {}
    for stage in ("decode", "queue", "inference", "encode"):
        label = f'mri_stage_duration_seconds_{{}}{{{{stage="{stage}"}}}}'
        count = scrape(after, label.format("count")) - scrape(before, label.format("count"))
        total = scrape(after, label.format("sum")) - scrape(before, label.format("sum"))
        means[stage] = round(total / count * 1000, 1) if count else float("nan")
    return means


async def main(args: argparse.Namespace) -> int:
    image, image_name = load_image(args.image)
    env = {
        "MRI_MAX_QUEUE_SIZE": str(args.max_queue_size),
        "MRI_MAX_BATCH_SIZE": str(args.max_batch_size),
        "MRI_MAX_CONCURRENT_REQUESTS": str(args.max_concurrent_requests),
    }
    server = Server(args.model_dir, env) if args.url is None else None
    url = server.url if server else args.url
    pid = server.process.pid if server else args.pid
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    try:
        async with httpx.AsyncClient(limits=limits, timeout=args.timeout) as client:
            model = await wait_ready(client, url)
            invoker: Invoker = (
                RawClient(url, image, args.connections) if args.client == "raw" else HttpxClient(client, url, image)
            )
            await measure_capacity(invoker, args.workers, 3.0)  # warm the server and the client
            capacity = await measure_capacity(invoker, args.workers, args.capacity_seconds)
            rss_before = rss_bytes(pid) if pid else None  # after every batch size has been seen once
            rate = args.rate or args.overload * capacity
            metrics_before = (await client.get(f"{url}/metrics")).text
            print(
                f"model: {model.get('name')} v{model.get('version')} on {model.get('runtime')} "
                f"({model.get('device')}, {model.get('precision')}), image {model.get('image_size')} px"
            )
            print(f"payload: {image_name} ({len(image) / 1024:.0f} KB)")
            print(f"capacity (closed loop, {args.workers} clients, {args.capacity_seconds:g} s): {capacity:.1f} img/s")
            print(f"overload: {rate:.1f} req/s ({rate / capacity:.1f}x capacity) for {args.duration:g} s ...")
            outcome, achieved = await overload(invoker, rate, args.duration, args.timeout)
            invoker.close()
            await asyncio.sleep(args.settle)
            rss_after = rss_bytes(pid) if pid else None
            metrics = (await client.get(f"{url}/metrics")).text
    finally:
        exit_code = server.stop() if server else None

    total = sum(outcome.statuses.values())
    ok, busy = outcome.statuses.get("200", 0), outcome.statuses.get("503", 0)
    other = total - ok - busy
    # A 200 waits at most for the images admitted ahead of it (the queue, or the concurrency limit when that is
    # lower) and one batch, served at the rate the server kept up during the overload.
    served = ok / args.duration
    admitted = min(args.max_queue_size, args.max_concurrent_requests)
    bound_s = (admitted + args.max_batch_size) / served if served else float("inf")
    p99_ms = percentile(outcome.ok_latencies, 99)
    figures = {
        "model": model,
        "payload": image_name,
        "capacity_img_s": round(capacity, 2),
        "target_rate_req_s": round(rate, 2),
        "achieved_rate_req_s": round(achieved, 2),
        "duration_s": args.duration,
        "requests": total,
        "statuses": dict(outcome.statuses),
        "busy_without_retry_after": outcome.busy_without_retry_after,
        "ok_throughput_img_s": round(ok / args.duration, 2),
        "ok_latency_ms": {q: round(percentile(outcome.ok_latencies, q), 1) for q in (50, 90, 99, 100)},
        "busy_latency_ms": {q: round(percentile(outcome.busy_latencies, q), 1) for q in (50, 99)},
        "p99_bound_ms": round(bound_s * 1000, 1),
        "ok_p99_ms_per_10s": windows(outcome, args.duration),
        "client_send_lag_ms": {q: round(percentile(outcome.send_lags, q), 1) for q in (50, 99)},
        "server_stage_mean_ms": stage_means(metrics_before, metrics),
        "server_rejected_total": scrape(metrics, "mri_rejected_total"),
        "server_limited_total": scrape(metrics, "mri_limited_total"),
        "rss_before_mb": round(rss_before / 2**20, 1) if rss_before else None,
        "rss_after_mb": round(rss_after / 2**20, 1) if rss_after else None,
        "server_exit_code": exit_code,
        "settings": {
            "max_batch_size": args.max_batch_size,
            "max_queue_size": args.max_queue_size,
            "max_concurrent_requests": args.max_concurrent_requests,
        },
        "client": args.client,
    }
    print(f"answers: {total} ({achieved:.1f} req/s sent): 200 x {ok}, 503 x {busy}, other x {other}")
    print(f"503 without Retry-After: {outcome.busy_without_retry_after}")
    print(
        f"200s: {ok / args.duration:.1f} img/s; latency p50 {figures['ok_latency_ms'][50]} ms, "
        f"p90 {figures['ok_latency_ms'][90]} ms, p99 {p99_ms:.1f} ms, max {figures['ok_latency_ms'][100]} ms "
        f"(bound: {admitted} admitted + 1 batch at {served:.1f} img/s = {bound_s * 1000:.0f} ms)"
    )
    print(f"p99 of the 200s by 10 s of arrival (ms): {figures['ok_p99_ms_per_10s']}")
    stages = figures["server_stage_mean_ms"]
    print(f"server stages, mean ms: {', '.join(f'{k} {v}' for k, v in stages.items())} (decode includes its wait)")
    print(f"503s: latency p50 {figures['busy_latency_ms'][50]} ms, p99 {figures['busy_latency_ms'][99]} ms")
    lag_p99 = percentile(outcome.send_lags, 99)
    print(f"client send lag: p50 {figures['client_send_lag_ms'][50]} ms, p99 {lag_p99:.1f} ms")
    if lag_p99 > 100:
        print("WARNING  the client fell behind its schedule: it could not generate the load it aimed at")
    checks = {
        "every answer 200 or 503 + Retry-After": other == 0 and outcome.busy_without_retry_after == 0,
        "p99 of the 200s within the bound of the admission settings": p99_ms <= bound_s * 1000,
    }
    if rss_before and rss_after:
        growth = rss_after / rss_before - 1
        print(f"server RSS: {rss_before / 2**20:.0f} MB before, {rss_after / 2**20:.0f} MB after ({growth:+.1%})")
        checks["RSS after within 10% of before"] = abs(growth) <= 0.10
    if exit_code is not None:
        checks["server exits 0 on SIGTERM"] = exit_code == 0
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    if server:
        print(f"server log: {server.log}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**figures, "checks": checks}, indent=2, default=str))
    return 0 if all(checks.values()) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", help="start `mri-classifier serve` on this model")
    target.add_argument("--url", help="use a server already running at this URL")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its memory")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of overload (default 60)")
    parser.add_argument("--overload", type=float, default=4.0, help="rate as a multiple of capacity (default 4)")
    parser.add_argument("--rate", type=float, help="requests/s instead of --overload x capacity")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=16, help="closed-loop clients measuring capacity")
    parser.add_argument("--connections", type=int, default=512, help="client connection pool")
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="raw asyncio streams (light) or httpx (heavier)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="client timeout per request (s)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before measuring memory after the run")
    parser.add_argument("--max-batch-size", type=int, default=8, help="server setting (and for the bound)")
    parser.add_argument("--max-queue-size", type=int, default=64, help="server setting (and for the bound)")
    parser.add_argument("--max-concurrent-requests", type=int, default=64, help="server setting (and for the bound)")
    parser.add_argument("--image", help="JPEG to send (default: one from the dataset, else generated)")
    parser.add_argument("--json-out", help="also write the figures here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
