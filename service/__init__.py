"""The MRI classifier's inference service (FastAPI).

Importing the package blocks third-party telemetry for the whole process (``service.offline``): the training
code imports the service's labels and preprocessing, so the server, training, evaluation and benchmarks are
all covered before any model is converted or loaded.
"""

from service.offline import block_telemetry

block_telemetry()
