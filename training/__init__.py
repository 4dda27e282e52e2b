"""The MRI classifier's training job: data, model, training, export, evaluation, SageMaker.

Importing it imports ``service`` (labels, preprocessing), which blocks third-party telemetry for the process
(``service.offline``) before any model is converted.
"""

import service  # noqa: F401  (blocks OpenVINO telemetry: service.offline)
