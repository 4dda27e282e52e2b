"""The service's one settings object: typed fields read from ``MRI_*`` environment variables (or ``.env``), and
its sibling for ``mri-classifier dicom-node`` (``MRI_DICOM_NODE_*``, ``DicomNodeSettings``).

This is the only module that reads the environment. SageMaker's own variables are honoured where the
platform sets them: ``SAGEMAKER_BIND_TO_PORT`` wins over ``MRI_PORT`` and ``SAGEMAKER_CONTAINER_LOG_LEVEL``
is accepted for the log level. Command-line flags of ``mri-classifier serve`` override both. TensorFlow's
``TF_FORCE_GPU_ALLOW_GROWTH``, which would override ``MRI_GPU_MEMORY_GROWTH``, is refused when they disagree.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service import mime
from service.imaging.pixels import MAX_PIXELS, decode_budget_bytes
from service.inference.tta import TTA

RuntimeName = Literal["auto", "tensorflow", "openvino", "onnxruntime"]
Precision = Literal["auto", "f32", "bf16", "f16"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
#: TensorFlow's own switch for GPU memory growth, which overrides what the service configures.
TF_FORCE_GPU_ALLOW_GROWTH = "TF_FORCE_GPU_ALLOW_GROWTH"


class Settings(BaseSettings):
    """Every knob of the inference service; env var ``MRI_<FIELD>`` (e.g. ``MRI_MAX_BATCH_SIZE=16``)."""

    model_config = SettingsConfigDict(
        env_prefix="MRI_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        hide_input_in_errors=True,  # a refused API key must not end up in a crash log
    )

    model_dir: Path = Field(
        default=Path(mime.SAGEMAKER_MODEL_DIR),
        description="Versioned model folder (<dir>/<version>/saved_model.pb) or one plain SavedModel folder.",
    )
    builtin_model_dir: Path | None = Field(
        default=None,
        description="The model built into the image (set by the images): served when MRI_MODEL_DIR is not set "
        "and the default model folder is empty; never in place of a configured model that fails to load.",
    )
    builtin_model_until_trained: bool = Field(
        default=False,
        description="MRI_MODEL_DIR is a model store that training fills later (KServe's /mnt/models): serve the "
        "built-in model while it holds no version, then its first version (hot reload). A version already there "
        "at start is served as configured, never replaced by the built-in model if it fails.",
    )
    model_name: str | None = Field(
        default=None, description="Name served on /v1/models/<name>; defaults to the metadata's model_name."
    )
    model_version: int | None = Field(default=None, ge=1, description="Serve this version instead of the newest.")
    host: str = Field(
        default="127.0.0.1", description="Interface to bind: this machine only, unless set (the images set 0.0.0.0)."
    )
    port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        validation_alias=AliasChoices(mime.SAGEMAKER_BIND_TO_PORT, "MRI_PORT", "port"),
        description="TCP port; SAGEMAKER_BIND_TO_PORT overrides MRI_PORT.",
    )
    runtime: RuntimeName = Field(
        default="auto",
        description="auto = TensorFlow when the installed TensorFlow can use a GPU (a CUDA build that sees one), "
        "else OpenVINO on the CPU (TensorFlow when OpenVINO is missing); /readyz says which and why.",
    )
    openvino_precision: Precision = Field(
        default="auto",
        description="OpenVINO inference precision: auto = the CPU plugin's default (bf16 on CPUs with "
        "AVX512-BF16/AMX, f32 elsewhere); f32 matches TensorFlow to 1e-4.",
    )
    inference_threads: int = Field(default=0, ge=0, description="CPU threads for inference; 0 = the runtime's default.")
    inference_streams: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Batches inferred at the same time, each by its own batcher worker (an OpenVINO stream "
        "each: the CPU's threads are split between them). 0 = auto: 2 for OpenVINO on a machine with 2 or more "
        "CPUs (throughput; a lone request then runs on fewer threads), else 1. 1 = every thread on one batch "
        "(lowest latency for a lone request).",
    )
    tta: TTA = Field(
        default="none",
        description="Test-time augmentation: flip averages each image with its left-right mirror "
        "(twice the compute; see the model card for what it changed on validation).",
    )
    max_batch_size: int = Field(default=8, ge=1, le=256, description="Largest batch the dynamic batcher forms.")
    max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="How long a batch waits for requests already being decoded (never when none are).",
    )
    max_queue_size: int = Field(
        default=64, ge=1, description="Images admitted (decoding or queued) before new requests get 503."
    )
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After seconds sent with a 503.")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Largest request body (413 above).")
    max_pixels: int = Field(
        default=MAX_PIXELS,
        ge=64,
        description="Largest image in pixels (413 above). It also sets the memory one decode may take, what a "
        f"16-bit greyscale image of that size needs ({decode_budget_bytes(MAX_PIXELS) >> 20} MiB at the default): "
        "a DICOM whose header announces more (colour, 32-bit samples) is refused with 413 before decoding.",
    )
    max_concurrent_decodes: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Image decodes run at once (each may take up to the decode budget of MRI_MAX_PIXELS).",
    )
    max_images_per_request: int = Field(default=16, ge=1, description="Most images in one request (413 above).")
    max_concurrent_requests: int = Field(
        default=64, ge=1, description="Requests in flight before new ones get 503 + Retry-After (probes exempt)."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="Time allowed to receive a request body (408 after: slowloris)."
    )
    request_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="Time allowed to answer a request (504 after; SageMaker waits 60 s)."
    )
    model_poll_interval_s: float = Field(
        default=5.0, ge=0, le=86400, description="Hot reload: seconds between polls of the model directory (0: off)."
    )
    api_key: SecretStr | None = Field(
        default=None, description="When set, requests need it in X-API-Key or Authorization: Bearer (16+ chars)."
    )
    api_key_previous: SecretStr | None = Field(
        default=None, description="A second accepted key, for rotation without downtime."
    )
    auth_exempt_health: bool = Field(default=True, description="/healthz, /readyz and /ping stay open with a key.")
    auth_exempt_metrics: bool = Field(default=True, description="/metrics stays open with a key (for scrapers).")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated); empty: CORS off."
    )
    warmup: bool = Field(default=True, description="Run warm-up inferences before reporting ready.")
    gpu_memory_growth: bool = Field(
        default=True,
        description="TensorFlow on a GPU allocates memory as it needs it (up to MRI_GPU_MEMORY_LIMIT_MB when set); "
        "false: it takes all of it (or all of the limit) at start.",
    )
    gpu_memory_limit_mb: int = Field(
        default=0,
        ge=0,
        description="Most GPU memory in MiB that TensorFlow may use on each GPU in this process, to share a card "
        "between processes; 0 = no limit.",
    )
    graceful_shutdown_s: float = Field(
        default=25.0,
        ge=0,
        le=300,
        description="On SIGTERM, time to drain in-flight requests (SageMaker kills at 30 s).",
    )
    log_level: LogLevel = Field(
        default="info",
        validation_alias=AliasChoices("MRI_LOG_LEVEL", mime.SAGEMAKER_CONTAINER_LOG_LEVEL, "log_level"),
        description="Log level: a name, or one of SageMaker's numeric levels (20 = info).",
    )
    access_log: bool = Field(default=False, description="Uvicorn access log (method, path, status; never bodies).")
    ood_max_colour_spread: float = Field(
        default=0.05, ge=0, le=1, description="Non-MRI warning above this mean RGB spread (when the model has none)."
    )
    ood_max_border_brightness: float = Field(
        default=0.35, ge=0, le=1, description="Non-MRI warning above this border gray level (when the model has none)."
    )
    ood_min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Unsure warning under this top probability (when the model has none)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _numeric_log_level(cls, value: object) -> object:
        """Accept SageMaker's numeric levels (``20``) as well as names."""
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            return logging.getLevelName(int(value)).lower()
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_key", "api_key_previous", mode="after")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        """Strip the newline a Secret file often carries; refuse guessable keys."""
        if value is None:
            return None
        key = value.get_secret_value().strip()
        if len(key) < 16:
            raise ValueError("API keys must be at least 16 characters")
        return SecretStr(key)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_images_per_request > self.max_queue_size:
            raise ValueError("max_images_per_request must not exceed max_queue_size")
        return self

    @model_validator(mode="after")
    def _builtin_model_to_fall_back_on(self) -> Settings:
        if self.builtin_model_until_trained and self.builtin_model_dir is None:
            raise ValueError("MRI_BUILTIN_MODEL_UNTIL_TRAINED needs MRI_BUILTIN_MODEL_DIR (the images set it)")
        return self

    @model_validator(mode="after")
    def _one_gpu_memory_policy(self) -> Settings:
        """TensorFlow's allocator lets ``TF_FORCE_GPU_ALLOW_GROWTH`` win over the configured growth: refuse a value
        of it that disagrees with ``MRI_GPU_MEMORY_GROWTH`` rather than let it win silently."""
        forced = os.environ.get(TF_FORCE_GPU_ALLOW_GROWTH)
        if forced is not None and forced.strip().lower() != str(self.gpu_memory_growth).lower():
            raise ValueError(
                f"{TF_FORCE_GPU_ALLOW_GROWTH}={forced.strip()[:16]} contradicts MRI_GPU_MEMORY_GROWTH="
                f"{str(self.gpu_memory_growth).lower()}: unset it, GPU memory follows MRI_GPU_MEMORY_GROWTH and "
                "MRI_GPU_MEMORY_LIMIT_MB"
            )
        return self


_AE_TITLE = r"^[ -\[\]-~]{1,16}$"  # 1-16 characters of the DICOM default repertoire, no backslash


class DicomNodeSettings(BaseSettings):
    """The DICOM node's own knobs (``mri-classifier dicom-node``); env var ``MRI_DICOM_NODE_<FIELD>``. The model,
    batching and input checks are the service's ``Settings`` (``MRI_*``), shared with ``/predict``."""

    model_config = SettingsConfigDict(
        env_prefix="MRI_DICOM_NODE_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        hide_input_in_errors=True,  # a refused password must not end up in a crash log
    )

    ae_title: str = Field(default="MRICLASSIFIER", pattern=_AE_TITLE, description="The node's own AE title.")
    host: str = Field(
        default="127.0.0.1",
        description="Interface the DICOM and HTTP ports bind: this machine only, unless set (compose, k8s: 0.0.0.0).",
    )
    port: int = Field(default=11112, ge=1, le=65535, description="DICOM port (C-ECHO, C-STORE).")
    http_port: int = Field(default=8081, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz (0: off).")
    allowed_aets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate (comma-separated; required: the node refuses to start "
        "with none). Every other caller's association is rejected.",
    )
    max_associations: int = Field(default=4, ge=1, le=64, description="Associations at once (more are rejected).")
    max_association_instances: int = Field(
        default=2000, ge=1, description="Instances one association may store; the next ones get 0xA700."
    )
    max_instance_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest instance accepted (0xA700 above)."
    )
    max_pending: int = Field(
        default=64,
        ge=1,
        description="Slices received and not yet classified; more get 0xA700 (at most MRI_MAX_QUEUE_SIZE).",
    )
    network_timeout_s: float = Field(default=60.0, gt=0, le=3600, description="Idle association timeout.")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate: the DICOM port speaks TLS.")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of MRI_DICOM_NODE_TLS_CERT_FILE.")
    tls_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle: callers must present a certificate it signed (mutual TLS)."
    )
    store_ae_title: str | None = Field(
        default=None, pattern=_AE_TITLE, description="C-STORE destination of the results: the PACS's AE title."
    )
    store_host: str | None = Field(default=None, description="C-STORE destination: host.")
    store_port: int = Field(default=104, ge=1, le=65535, description="C-STORE destination: port.")
    store_tls: bool = Field(default=False, description="C-STORE destination speaks TLS.")
    store_tls_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle that signed the C-STORE destination (default: the system's)."
    )
    stow_url: str | None = Field(
        default=None, description="STOW-RS destination: the DICOMweb base URL (results go to <url>/studies)."
    )
    stow_token: SecretStr | None = Field(default=None, description="STOW-RS: bearer token.")
    stow_username: str | None = Field(default=None, description="STOW-RS: basic auth user.")
    stow_password: SecretStr | None = Field(default=None, description="STOW-RS: basic auth password.")
    stow_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle that signed the DICOMweb server (default: the system's)."
    )
    stow_timeout_s: float = Field(default=30.0, gt=0, le=600, description="STOW-RS request timeout.")
    send_secondary_capture: bool = Field(
        default=False, description="Also send a Secondary Capture of each slice's Grad-CAM overlay."
    )
    series_summary: bool = Field(
        default=True,
        description="Send one summary SR per series once it has been quiet for MRI_DICOM_NODE_SERIES_QUIET_S.",
    )
    series_quiet_s: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds without a new slice after which a series is complete."
    )
    delivery_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Tries of a delivery before it counts as failed (then dropped, or kept in "
        "the spool and retried every MRI_DICOM_NODE_DELIVERY_MAX_BACKOFF_S).",
    )
    delivery_backoff_s: float = Field(
        default=2.0, gt=0, le=3600, description="Wait before the first retry; doubled each time."
    )
    delivery_max_backoff_s: float = Field(default=300.0, gt=0, le=86400, description="Longest wait between retries.")
    delivery_batch: int = Field(default=32, ge=1, le=1000, description="Objects sent per association or request.")
    max_outbox: int = Field(
        default=1000, ge=1, description="Results held in memory per destination; when full, new slices get 0xA700."
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Folder for results whose delivery failed, kept until delivered (also across restarts). "
        "Unset: nothing is ever written to disk.",
    )
    spool_max_bytes: int = Field(
        default=1024**3, ge=1024, description="Size limit of the spool; when full, new slices get 0xA700."
    )
    ready_requires_destinations: bool = Field(
        default=True, description="/readyz is 503 while a destination does not answer (C-ECHO, HTTP)."
    )
    destination_check_interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds between reachability checks of the destinations."
    )

    @field_validator("allowed_aets", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [title.strip() for title in value.split(",") if title.strip()]
        return value

    @field_validator(
        "store_ae_title",
        "store_host",
        "stow_url",
        "stow_token",
        "stow_username",
        "stow_password",
        "tls_cert_file",
        "tls_key_file",
        "tls_ca_file",
        "store_tls_ca_file",
        "stow_ca_file",
        "spool_dir",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (``VAR=`` in compose or a ConfigMap) means unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allowed_aets", mode="after")
    @classmethod
    def _ae_titles(cls, value: list[str]) -> list[str]:
        import re

        for title in value:
            if not re.fullmatch(_AE_TITLE, title):
                raise ValueError("an AE title is 1 to 16 characters, no backslash")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DicomNodeSettings:
        if (self.store_host is None) != (self.store_ae_title is None):
            raise ValueError("set both MRI_DICOM_NODE_STORE_HOST and MRI_DICOM_NODE_STORE_AE_TITLE, or neither")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both MRI_DICOM_NODE_TLS_CERT_FILE and MRI_DICOM_NODE_TLS_KEY_FILE, or neither")
        if self.stow_token is not None and self.stow_username is not None:
            raise ValueError("STOW-RS takes a bearer token or basic auth, not both")
        if (self.stow_username is None) != (self.stow_password is None):
            raise ValueError("set both MRI_DICOM_NODE_STOW_USERNAME and MRI_DICOM_NODE_STOW_PASSWORD, or neither")
        if self.stow_url is not None and not self.stow_url.startswith(("http://", "https://")):
            raise ValueError("MRI_DICOM_NODE_STOW_URL must be an http:// or https:// URL")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests pass their own ``Settings`` to ``create_app`` instead."""
    return Settings()
