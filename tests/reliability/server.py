"""A real ``mri-classifier serve`` process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.processes import free_port, serve_command


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class ServerProcess:
    """``mri-classifier serve --model-dir <model_dir>`` with ``MRI_*`` overrides; stdout+stderr go to a log file."""

    def __init__(self, model_dir: Path, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "serve.log"
        self.workdir = workdir
        self.model_dir = model_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MRI_", "SAGEMAKER_"))}
        self.env.update(TF_CPP_MIN_LOG_LEVEL="2", MRI_PORT=str(self.port), MRI_HOST="127.0.0.1", **env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*serve_command(), "serve", "--model-dir", str(self.model_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 150.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"the server was not ready within {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
