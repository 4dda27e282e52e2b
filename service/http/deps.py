"""FastAPI dependencies: the app's settings, classifier and batcher, as ``Annotated`` aliases.

They are ``async``: FastAPI runs a plain ``def`` dependency in the worker thread pool, so every request (the
probes included) would wait for a free thread behind image decodes under load.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.inference.batching import Batcher
from service.inference.classifier import Classifier


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _classifier(request: Request) -> Classifier:
    classifier: Classifier = request.app.state.classifier
    return classifier


async def _batcher(request: Request) -> Batcher:
    batcher: Batcher = request.app.state.batcher
    return batcher


SettingsDep = Annotated[Settings, Depends(_settings)]
ClassifierDep = Annotated[Classifier, Depends(_classifier)]
BatcherDep = Annotated[Batcher, Depends(_batcher)]
