"""Strict validation of Kubernetes custom resources against the models their SDKs generate from the CRDs'
OpenAPI schemas: ``kubeflow-training`` (``KubeflowOrgV1TFJob``), ``kserve`` (``V1beta1InferenceService``) and,
for the pod templates inside them, the ``kubernetes`` client.

Every key must be a field of its model (unknown fields are errors, as with ``kubectl --validate=strict``),
every value must have the declared type, and each object is rebuilt through its model's constructor, which
enforces the required fields.

The KServe SDK's package ``__init__`` starts its model server (pandas, gRPC, ...), which this project does not
install: ``kserve`` is installed without dependencies and only its generated models are imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from typing import Any

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "date": (str,),
    "datetime": (str,),
}
#: Scalar types some SDKs name without a model class (a Kubernetes quantity: "500m", "2Gi" or a number).
_SCALARS: dict[str, tuple[type, ...]] = {"ResourceQuantity": (str, int, float)}


class SchemaError(AssertionError):
    """The object does not match the schema; the message says where."""


def _kserve_models() -> types.ModuleType:
    """``kserve.models`` without running ``kserve/__init__.py``."""
    if "kserve" not in sys.modules:
        spec = importlib.util.find_spec("kserve")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("kserve is not installed: pip install --no-deps kserve (make venv does)")
        package = types.ModuleType("kserve")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["kserve"] = package
    return importlib.import_module("kserve.models")


def _model_modules() -> list[types.ModuleType]:
    import kubernetes.client
    from kubeflow.training import models as kubeflow_models

    return [kubeflow_models, _kserve_models(), kubernetes.client]


def _resolve(name: str) -> type:
    for module in _model_modules():
        found = getattr(module, name, None)
        if isinstance(found, type) and hasattr(found, "openapi_types"):
            return found
    raise SchemaError(f"no model class {name}")


def validate(value: Any, type_name: str, where: str = "") -> Any:
    """Check ``value`` (parsed YAML) against ``type_name`` (e.g. ``KubeflowOrgV1TFJob``); returns the model."""
    if (match := _LIST.match(type_name)) is not None:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {type(value).__name__}")
        return [validate(item, match.group(1), f"{where}[{i}]") for i, item in enumerate(value)]
    if (match := _DICT.match(type_name)) is not None:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise SchemaError(f"{where}: expected a map with string keys")
        return {key: validate(item, match.group(1), f"{where}.{key}") for key, item in value.items()}
    if type_name == "object":
        return value
    if type_name in _PRIMITIVES or type_name in _SCALARS:
        allowed = _PRIMITIVES.get(type_name) or _SCALARS[type_name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise SchemaError(f"{where}: expected {type_name}, got {type(value).__name__} {value!r}")
        return value
    model = _resolve(type_name)
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected a {type_name} object, got {type(value).__name__}")
    by_key = {key: attr for attr, key in model.attribute_map.items()}
    unknown = sorted(set(value) - set(by_key))
    if unknown:
        raise SchemaError(f"{where or type_name}: unknown field(s) {unknown} for {type_name}")
    kwargs = {
        by_key[key]: validate(item, model.openapi_types[by_key[key]], f"{where}.{key}".lstrip("."))
        for key, item in value.items()
    }
    try:
        return model(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{where or type_name}: {exc}") from None
