"""The Open Inference Protocol (KServe V2, Triton's HTTP/REST API): request bodies -> model inputs, results ->
answers. Nothing here knows about HTTP beyond raising ``service.errors`` exceptions.

A request carries one of two input tensors (the model metadata lists both, one datatype each):

* ``images``, ``FP32`` (or ``UINT8``) ``[N, H, W, 3]``: pixel values in [0, 255] of any height and width (padded
  and resized exactly like image files, by ``service.protocols.codec.pixels_to_rgb`` and ``to_model_input``);
* ``image_files``, ``BYTES`` ``[N]`` (or ``[N, 1]``): encoded image files (JPEG, PNG, DICOM), base64 strings in
  JSON ``data`` (``BYTES`` sent as ``images`` are accepted too).

Tensor data travels as JSON ``data`` (row-major, flat or nested; parsed and converted in steps by
``service.protocols.codec``, so a large body never holds the event loop) or, with the *binary tensor data* extension,
as raw bytes after the JSON header: the request's ``Inference-Header-Content-Length`` says where the JSON ends
and the input's ``binary_data_size`` how many bytes follow (``BYTES`` elements each with a 4-byte little-endian
length). The answer holds ``probabilities`` (``FP32 [N, 4]``) and ``warning`` (``BOOL [N]``: the non-MRI /
unsure flag of ``checks.input_check``); an output requested with ``binary_data`` (or every output with the request
parameter ``binary_data_output``) is sent as raw bytes after the JSON, and one requested with
``classification: k`` (the *classification* extension) becomes ``BYTES [N, k]`` of ``"value:index:label"``,
most probable first. The protocol's headers (``Inference-Header-Content-Length``, ``Content-Encoding``) are checked
by :func:`check_headers`: anything else than a byte count within the body, or a compressed body, is a 4xx.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service import metrics
from service.checks.input_check import Check
from service.errors import BadRequestError, InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.imaging.preprocessing import PreprocessConfig, to_model_input
from service.inference.classifier import ModelInfo
from service.labels import CLASSES
from service.protocols import codec

INPUT_NAME = "images"
FILES_INPUT = "image_files"
INPUTS = (INPUT_NAME, FILES_INPUT)
PROBABILITIES = "probabilities"
WARNING = "warning"
OUTPUTS = (PROBABILITIES, WARNING)
HEADER_LENGTH = "Inference-Header-Content-Length"
CONTENT_ENCODING = "Content-Encoding"
#: Longest byte count the length header may hold (20 digits: any 64-bit size).
_MAX_LENGTH_DIGITS = 20
EXTENSIONS = ("binary_tensor_data", "classification")
PIXEL_TYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
BYTES = "BYTES"
_LENGTH = struct.Struct("<I")


# ------------------------------------------------------------------------------------------ protocol schemas
class TensorParameters(BaseModel):
    """The parameters of a request tensor the service reads (others are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    binary_data_size: int | None = Field(default=None, ge=0, description="Bytes of this input after the JSON.")
    binary_data: bool | None = Field(default=None, description="Send this output as raw bytes after the JSON.")
    classification: int | None = Field(default=None, ge=0, description="Top-k as 'value:index:label' strings.")


class RequestInput(BaseModel):
    name: str = Field(examples=[INPUT_NAME], description=f"{INPUT_NAME} (pixels) or {FILES_INPUT} (image files).")
    shape: list[int] = Field(examples=[[1, 224, 224, 3]])
    datatype: str = Field(examples=["UINT8"], description="FP32 or UINT8 pixels, or BYTES image files.")
    parameters: TensorParameters = Field(default_factory=TensorParameters)
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str = Field(examples=[PROBABILITIES])
    parameters: TensorParameters = Field(default_factory=TensorParameters)


class InferenceRequest(BaseModel):
    """``POST /v2/models/<name>/infer`` (its JSON part)."""

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str = Field(examples=["mri-classifier"])
    version: str = Field(examples=["0.1.0"])
    extensions: list[str] = Field(examples=[list(EXTENSIONS)])


class ModelMetadata(BaseModel):
    name: str = Field(examples=["mri-classifier"])
    versions: list[str] = Field(examples=[["2"]])
    platform: str = Field(examples=["openvino"])
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    """The JSON part of an inference answer (binary outputs follow it, ``Inference-Header-Content-Length``)."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


# ------------------------------------------------------------------------------------------------- decode
@dataclass(frozen=True)
class OutputRequest:
    name: str
    binary: bool
    classification: int


@dataclass(frozen=True)
class ParsedRequest:
    """A checked request: its images (pixel arrays or encoded files), their count, the outputs to send."""

    id: str | None
    count: int
    pixels: np.ndarray | None
    files: list[bytes] | None
    outputs: tuple[OutputRequest, ...]


def model_metadata(info: ModelInfo) -> ModelMetadata:
    """The model's inputs and outputs as the protocol describes them (-1: any size): pixels as ``images`` or
    encoded files as ``image_files`` (a request sends one of the two)."""
    return ModelMetadata(
        name=info.name,
        versions=[str(info.version)],
        platform=info.runtime,
        inputs=[
            MetadataTensor(name=INPUT_NAME, datatype="FP32", shape=[-1, -1, -1, 3]),
            MetadataTensor(name=FILES_INPUT, datatype=BYTES, shape=[-1]),
        ],
        outputs=[
            MetadataTensor(name=PROBABILITIES, datatype="FP32", shape=[-1, len(CLASSES)]),
            MetadataTensor(name=WARNING, datatype="BOOL", shape=[-1]),
        ],
    )


def check_headers(header_lengths: Sequence[str], content_encodings: Sequence[str]) -> str | None:
    """The request's ``Inference-Header-Content-Length`` (``None`` when absent), after checking the headers the
    protocol reads: the length at most once and in ASCII digits (400), no compressed body (415)."""
    for value in content_encodings:
        for coding in value.split(","):
            if coding.strip().lower() not in ("", "identity"):
                raise UnsupportedMediaTypeError(f"{CONTENT_ENCODING} is not supported; send the body uncompressed")
    if len(header_lengths) > 1:
        raise BadRequestError(f"{HEADER_LENGTH} sent {len(header_lengths)} times; send it once")
    if not header_lengths:
        return None
    _byte_count(header_lengths[0])
    return header_lengths[0]


def _byte_count(header_length: str) -> int:
    """The value of ``Inference-Header-Content-Length``: ASCII digits only (``str.isdigit`` also accepts
    superscripts that ``int`` refuses), at most 20 of them."""
    value = header_length.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_LENGTH_DIGITS):
        raise BadRequestError(f"{HEADER_LENGTH} must be a byte count within the body")
    return int(value)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body."""
    if header_length is None:
        return body, b""
    size = _byte_count(header_length)
    if not 0 < size <= len(body):
        raise BadRequestError(f"{HEADER_LENGTH} must be a byte count within the body")
    return body[:size], body[size:]


def _validation_reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"invalid inference request: {where} {first.get('msg', '')}".strip()


def _split_bytes_elements(raw: bytes, count: int) -> list[bytes]:
    """BYTES tensor data in the binary extension's layout: each element a 4-byte length and its bytes."""
    files, offset = [], 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise BadRequestError("truncated BYTES tensor data")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise BadRequestError("truncated BYTES tensor data")
        files.append(raw[offset : offset + length])
        offset += length
    if len(files) != count:
        raise InvalidInputError(f"BYTES input holds {len(files)} elements; its shape says {count}")
    return files


def _json_bytes_elements(data: list[Any], count: int) -> list[bytes]:
    flat = [item for row in data for item in (row if isinstance(row, list) else [row])]
    if len(flat) != count:
        raise InvalidInputError(f"BYTES input holds {len(flat)} elements; its shape says {count}")
    files = []
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidInputError(f"BYTES element {index} must be a base64 string in JSON (or send binary data)")
        try:
            files.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidInputError(f"BYTES element {index} is not valid base64") from None
    return files


def _take_data(payload: Any) -> list[Any]:
    """Remove each input's JSON ``data`` from the parsed body (so that validating the request never walks a
    pixel array holding the GIL) and return them in input order (``None`` where an input has none)."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list):
        return []
    found = []
    for index, tensor in enumerate(inputs):
        data = tensor.pop("data", None) if isinstance(tensor, dict) else None
        if data is not None and not isinstance(data, list):
            raise InvalidInputError(f"invalid inference request: inputs.{index}.data must be a list")
        found.append(data)
    return found


def _short(text: str, limit: int = 32) -> str:
    """A client's string, cut for an error reason."""
    return text if len(text) <= limit else text[:limit] + "..."


def _pixels(
    tensor: RequestInput, data: list[Any] | None, raw: bytes | None, max_images: int, max_pixels: int
) -> np.ndarray:
    shape = tensor.shape
    if len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
        raise InvalidInputError(f"{tensor.datatype} input has shape {shape}; expected [N, height, width, 3]")
    if shape[0] > max_images:
        raise PayloadTooLargeError(f"{shape[0]} images in one request; the limit is {max_images}")
    if shape[1] * shape[2] > max_pixels:
        raise PayloadTooLargeError(f"images of {shape[2]}x{shape[1]} are over the limit of {max_pixels} pixels")
    dtype = PIXEL_TYPES[tensor.datatype]
    if raw is not None:
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise InvalidInputError(f"binary data of {len(raw)} bytes does not match {tensor.datatype} {shape}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    try:
        array = codec.numeric_array(data or [])
    except OverflowError:  # an integer too large for a float (JSON allows 4300 digits)
        raise InvalidInputError("input data has pixel values outside [0, 255]") from None
    except (ValueError, TypeError):
        raise InvalidInputError("input data is not a numeric array") from None
    if array.size != math.prod(shape):
        raise InvalidInputError(f"input data has {array.size} values; shape {shape} needs {math.prod(shape)}")
    codec.release(data or [])
    return array.reshape(shape)


def parse_request(body: bytes, header_length: str | None, max_images: int, max_pixels: int) -> ParsedRequest:
    """A request body (JSON, or JSON + binary tensor data) -> a checked request (400/413/422 otherwise).
    Blocking: call it in a worker thread, where the JSON parse and the pixel conversion (``service.protocols.codec``)
    hand the GIL to the event loop between short steps and start no garbage collection."""
    head, tail = _split_body(body, header_length)
    with codec.gc_paused():
        payload = codec.parse_json(head, max_images)
        data = _take_data(payload)
        try:
            request = InferenceRequest.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInputError(_validation_reason(exc)) from None
        return _checked(request, data[0] if data else None, tail, max_images, max_pixels)


def _checked(
    request: InferenceRequest, data: list[Any] | None, tail: bytes, max_images: int, max_pixels: int
) -> ParsedRequest:
    if len(request.inputs) != 1 or request.inputs[0].name not in INPUTS:
        names = [_short(tensor.name) for tensor in request.inputs[:4]]
        raise InvalidInputError(
            f"send exactly one input, {INPUT_NAME!r} (pixels) or {FILES_INPUT!r} (image files); got {names}"
        )
    tensor = request.inputs[0]
    if tensor.name == FILES_INPUT and tensor.datatype != BYTES:
        raise InvalidInputError(f"input {FILES_INPUT!r} holds {BYTES} (encoded image files)")
    size = tensor.parameters.binary_data_size
    if size is not None and size != len(tail):
        raise BadRequestError(f"binary_data_size is {size} but {len(tail)} bytes follow the JSON header")
    if size is None and tail:
        raise BadRequestError("binary data follows the JSON header but no input has a binary_data_size")
    raw = tail if size is not None else None
    if raw is None and data is None:
        raise InvalidInputError(f"input {tensor.name!r} has neither data nor binary_data_size")
    pixels, files = None, None
    if tensor.datatype in PIXEL_TYPES:
        pixels = _pixels(tensor, data, raw, max_images, max_pixels)
        count = pixels.shape[0]
    elif tensor.datatype == BYTES:
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise InvalidInputError(f"BYTES input has shape {shape}; expected [N] or [N, 1] image files")
        count = shape[0]
        if count > max_images:
            raise PayloadTooLargeError(f"{count} images in one request; the limit is {max_images}")
        files = _split_bytes_elements(raw, count) if raw is not None else _json_bytes_elements(data or [], count)
    else:
        raise InvalidInputError(
            f"unsupported datatype {_short(tensor.datatype)}; send FP32 or UINT8 pixels or BYTES files"
        )
    return ParsedRequest(request.id, count, pixels, files, _outputs(request))


def _outputs(request: InferenceRequest) -> tuple[OutputRequest, ...]:
    binary_all = request.parameters.get("binary_data_output") is True
    if request.outputs is None:
        return tuple(OutputRequest(name, binary_all, 0) for name in OUTPUTS)
    chosen = []
    for output in request.outputs:
        if output.name not in OUTPUTS:
            raise InvalidInputError(f"unknown output {output.name!r}; this model has {list(OUTPUTS)}")
        top = output.parameters.classification or 0
        if top and output.name != PROBABILITIES:
            raise InvalidInputError(f"classification applies to {PROBABILITIES!r} only")
        if top > len(CLASSES):
            raise InvalidInputError(f"classification asks for {top} classes; the model has {len(CLASSES)}")
        binary = output.parameters.binary_data if output.parameters.binary_data is not None else binary_all
        chosen.append(OutputRequest(output.name, binary, top))
    return tuple(chosen)


def decode(request: ParsedRequest, config: PreprocessConfig, max_pixels: int) -> np.ndarray:
    """The request's images -> uint8 model inputs [N, S, S, 3] (blocking; run by the pipeline off the loop)."""
    if request.files is not None:
        return codec.decode_files(request.files, config, max_pixels)
    assert request.pixels is not None
    return np.stack(
        [to_model_input(codec.pixels_to_rgb(image, i, max_pixels), config) for i, image in enumerate(request.pixels)]
    )


# ------------------------------------------------------------------------------------------------- encode
def classification(probs: np.ndarray, top: int) -> list[list[str]]:
    """The classification extension: per image, the ``top`` classes as ``"value:index:label"``, best first."""
    rows = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:top]
        rows.append([f"{float(row[i]):f}:{int(i)}:{CLASSES[int(i)]}" for i in order])
    return rows


def _bytes_tensor(elements: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in elements)


def encode(
    probs: np.ndarray, checks: list[Check], info: ModelInfo, request: ParsedRequest
) -> tuple[bytes, bytes | None]:
    """(JSON header, binary tail or ``None``) of the answer."""
    started = time.perf_counter()
    codec.record_predictions(probs)
    outputs, binary = [], []
    for wanted in request.outputs:
        if wanted.name == PROBABILITIES and wanted.classification:
            strings = classification(probs, wanted.classification)
            datatype, shape = BYTES, [len(strings), wanted.classification]
            values: list[Any] = [s for row in strings for s in row]
            raw = _bytes_tensor([s.encode() for s in values])
        elif wanted.name == PROBABILITIES:
            array = np.asarray(probs, dtype="<f4")
            datatype, shape, values, raw = "FP32", list(array.shape), array.ravel().tolist(), array.tobytes()
        else:
            flags = np.array([check.warning for check in checks], dtype=bool)
            datatype, shape, values, raw = "BOOL", [len(flags)], flags.tolist(), flags.tobytes()
        output = ResponseOutput(name=wanted.name, datatype=datatype, shape=shape)
        if wanted.binary:
            output.parameters = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            output.data = values
        outputs.append(output)
    answer = InferenceResponse(
        model_name=info.name, model_version=str(info.version), id=request.id, outputs=outputs
    ).model_dump(exclude_none=True)
    head = json.dumps(answer, separators=(",", ":")).encode()
    metrics.STAGE_LATENCY.labels(stage="encode").observe(time.perf_counter() - started)
    return head, (b"".join(binary) if binary else None)
