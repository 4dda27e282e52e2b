"""``mri-classifier dicom-node``: a DICOM node a PACS sends MR series to and receives the results from.

``scp`` listens (C-ECHO, C-STORE), ``node`` runs each slice through the service's pipeline and builds the results,
``delivery`` sends them (C-STORE, STOW-RS) with retries and the ``spool``, ``series`` groups slices into series
and studies, ``metrics`` and ``probes`` make it observable. Nothing here serves the HTTP API or imports training.
"""
