"""The docs tests use the service tests' tiny exported model for a live answer."""

from tests.service.conftest import client, open_client

__all__ = ["client", "open_client"]
