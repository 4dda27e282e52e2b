"""The docs tests use the service tests' tiny exported model for a live answer."""

from tests.service.conftest import client, model_root, open_client, tf_classifier

__all__ = ["client", "model_root", "open_client", "tf_classifier"]
