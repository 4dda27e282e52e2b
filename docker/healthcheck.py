#!/usr/bin/env python3
"""Container HEALTHCHECK: exit 0 when the service in this container answers 200 on its readiness route.

Standard library only (the image has no curl). The port is ``SAGEMAKER_BIND_TO_PORT`` when SageMaker sets
it, else ``MRI_PORT`` (the service's own setting), else 8080, or the second argument (``mri-healthcheck /readyz
8081`` for ``dicom-node``'s HTTP port). The path is the first argument, by default ``/readyz``: "healthy" means the
model is loaded and warm, not merely that the process is up.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    """Probe ``http://127.0.0.1:<port><path>`` with a 2-second timeout."""
    path = argv[1] if len(argv) > 1 else "/readyz"
    default = os.environ.get("SAGEMAKER_BIND_TO_PORT") or os.environ.get("MRI_PORT") or "8080"
    port = argv[2] if len(argv) > 2 else default
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"healthcheck {path}: {exc}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
