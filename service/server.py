"""``mri-classifier serve``: run the service with uvicorn (also the SageMaker ``serve`` entry point).

Settings come from ``MRI_*`` environment variables (see ``service.config``); the flags below override them.
On SIGTERM uvicorn stops accepting connections, drains in-flight requests for up to
``graceful_shutdown_s``, runs the lifespan shutdown (the batcher finishes its queue) and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import get_args

from pydantic import ValidationError

from service.config import LogLevel, RuntimeName, Settings
from service.http.middleware import RequestIdFilter
from service.inference import model_source
from service.inference.tta import TTA_MODES

log = logging.getLogger("service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mri-classifier serve", description="Serve the MRI classifier over HTTP (SageMaker serve contract)."
    )
    parser.add_argument("--model-dir", dest="model_dir", help="model folder (default /opt/ml/model)")
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1; 0.0.0.0 in the images)")
    parser.add_argument("--port", type=int, help="port (default 8080, or SAGEMAKER_BIND_TO_PORT)")
    parser.add_argument("--runtime", choices=get_args(RuntimeName))
    parser.add_argument("--max-batch-size", dest="max_batch_size", type=int)
    parser.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation (default none)")
    parser.add_argument("--max-wait-ms", dest="max_wait_ms", type=float)
    parser.add_argument("--log-level", dest="log_level", choices=get_args(LogLevel))
    return parser


def _ignore_after_drain(signum: int, frame: FrameType | None) -> None:
    """Uvicorn re-raises the captured SIGTERM once it has drained; handled here, the process exits 0."""


def run(argv: Sequence[str]) -> int:
    """Parse flags, build the settings and the app, serve until SIGTERM/SIGINT; returns the exit code."""
    args = build_parser().parse_args(list(argv))
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    try:
        settings = model_source.choose(Settings(**overrides))
    except ValidationError as exc:
        sys.stderr.write(f"mri-classifier serve: invalid settings:\n{exc}\n")
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())  # the request's X-Request-ID on each line, the access log's too
    import uvicorn

    from service.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=math.ceil(settings.graceful_shutdown_s),
        server_header=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    signal.signal(signal.SIGTERM, _ignore_after_drain)
    source = model_source.describe(settings)
    log.info("listening on %s:%d (%s model dir %s)", settings.host, settings.port, source.origin, source.model_dir)
    server.run()
    return 0 if server.started else 1
