"""Schemathesis against the service's own OpenAPI schema: generated requests (a bounded number per operation)
never get a 5xx, and every answer matches the schema: documented status code, content type and body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.inference.classifier import Classifier
from tests.service.conftest import make_settings

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(autouse=True)
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Keep Hypothesis' example database out of the working tree."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def schema_client(model_root: Path, tf_classifier: Classifier) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_root), tf_classifier), raise_server_exceptions=False) as client:
        yield client


def test_every_operation_answers_within_its_schema(schema_client: TestClient) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", schema_client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        check()
