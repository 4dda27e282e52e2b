"""Schemathesis: requests generated from the OpenAPI schema never get a 500 (bad input is always a 4xx)."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error


@pytest.fixture(autouse=True)
def hypothesis_home(tmp_path):
    """Keep Hypothesis' cache out of the working tree."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


def test_generated_requests_never_get_a_server_error(client):
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        check()
