"""Hot reload: a thread that polls the model directory (TensorFlow Serving's file-system polling).

Every ``MRI_MODEL_POLL_INTERVAL_S`` seconds it asks the classifier to look for a version other than the one
served (``Classifier.poll``): the new version is loaded and warmed in this thread while the old one keeps
serving, then swapped in; a broken version is logged, counted in ``mri_model_reloads_total{result="failure"}``
and leaves the old one serving. A service that started without a usable model becomes ready as soon as one
appears.
"""

from __future__ import annotations

import logging
import threading

from service import metrics
from service.inference.classifier import Classifier

log = logging.getLogger(__name__)


class ModelWatcher:
    """Calls ``classifier.poll()`` every ``interval_s`` seconds in a daemon thread (0 disables it)."""

    def __init__(self, classifier: Classifier, interval_s: float) -> None:
        self.classifier = classifier
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0  # finished polls of this watcher (also counted in mri_model_polls_total)

    def start(self) -> None:
        if self.interval_s > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mri-model-watcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop polling; a load in progress is abandoned to the daemon thread (the process is exiting)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.classifier.poll()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("model directory poll failed")
            finally:
                self.polls += 1
                metrics.MODEL_POLLS.inc()
