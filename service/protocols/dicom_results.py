"""DICOM results of one classified DICOM image, built in memory with highdicom: a Comprehensive SR holding a
TID 1500 measurement report, and a Secondary Capture of the Grad-CAM overlay. Both are filed in the input's study.

What is read from the input (``read_source``, header only, from the request's bytes) and copied into the results:

- the Patient module's type 1/2 attributes (Patient's Name, Patient ID, Birth Date, Sex) and the General Study
  module's (Study Instance UID, Study Date, Study Time, Referring Physician's Name, Study ID, Accession Number):
  DICOM requires them in every object of a study, and a PACS files an object by them;
- Specific Character Set, so that those values are encoded as in the input;
- SOP Class UID, SOP Instance UID and Series Instance UID: never copied, only used to reference the input.

Nothing else of the input reaches the results. A value that breaks its VR's rules (a birth date that is not a
date, a sex other than M/F/O) is left empty, as type 2 allows, rather than copied. No value is ever logged, put
in an exception or written to disk: pydicom's and highdicom's logs are silenced (highdicom logs the patient's
name when it looks invalid) and every failure becomes a fixed reason.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.checks.input_check import REASON_BACKGROUND, REASON_COLOUR, REASON_CONFIDENCE, REASON_UNFAMILIAR
from service.errors import BadImageError, InvalidInputError, ServiceError
from service.imaging.dicom import quiet_pydicom
from service.labels import CLASSES
from service.schemas import Prediction

#: The private coding scheme of the model's outputs (the ``99`` prefix marks a private scheme, PS3.16 §8.2).
CODING_SCHEME = "99MRICLS"
MANUFACTURER = "mri-classifier project"
SR_SERIES_NUMBER = 900
SC_SERIES_NUMBER = 901
SR_SERIES_DESCRIPTION = "AI tumour class probabilities - NOT FOR DIAGNOSIS"
SC_SERIES_DESCRIPTION = "AI Grad-CAM overlay - NOT FOR DIAGNOSIS"
SUMMARY_SERIES_NUMBER = 902
SUMMARY_SERIES_DESCRIPTION = "AI series summary of slice probabilities - NOT FOR DIAGNOSIS"
DISCLAIMER = (
    "Not a diagnosis. Research and decision-support output of an automated classifier of one 2-D MRI slice: "
    "class probabilities, not findings. It must not be used to diagnose, triage or treat anyone."
)

PATIENT_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_ATTRIBUTES = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: Every input attribute that reaches a result (the references below excepted).
COPIED_ATTRIBUTES = ("SpecificCharacterSet", *PATIENT_ATTRIBUTES, *STUDY_ATTRIBUTES)
#: Read to reference the input image, never copied as such.
REFERENCE_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")

_CLASS_MEANINGS = {"glioma": "Glioma", "meningioma": "Meningioma", "no_tumor": "No tumour", "pituitary": "Pituitary"}
_ENUMERATED = {"PatientSex": ("M", "F", "O")}
#: Every reason of the input check (``checks.input_check``) as (code value, meaning) of the private scheme: code values
#: of at most 16 characters (SH), so that every SR reader finds them in Code Value.
REASON_CODES = {
    REASON_COLOUR: ("colour_image", "Colour image (MRI slices are grayscale)"),
    REASON_BACKGROUND: ("bright_border", "No dark background around the anatomy"),
    REASON_CONFIDENCE: ("low_confidence", "Model unsure (low top probability)"),
    REASON_UNFAMILIAR: ("unlike_training", "Unlike the images the model was trained on"),
}


class DicomResultError(ServiceError):
    """The DICOM results could not be built (a fixed reason; never a value of the input)."""

    status_code = 422


@dataclass(frozen=True)
class SourceImage:
    """The header of one DICOM input reduced to what the results copy or reference."""

    dataset: Any  # a pydicom Dataset holding COPIED_ATTRIBUTES and REFERENCE_ATTRIBUTES only

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)


@dataclass(frozen=True)
class Algorithm:
    """The identification of the model (IHE AI Results' algorithm identification)."""

    name: str
    version: str
    data_fingerprint: str | None

    @classmethod
    def from_model(cls, name: str, version: int, metadata: Mapping[str, Any]) -> Algorithm:
        data = metadata.get("data")
        fingerprint = data.get("fingerprint") if isinstance(data, Mapping) else None
        return cls(name, str(version), str(fingerprint) if fingerprint else None)

    @property
    def parameters(self) -> list[str]:
        return [f"training data fingerprint (SHA-256) {self.data_fingerprint}"] if self.data_fingerprint else []


def _valid(keyword: str, element: Any) -> bool:
    """Whether a value obeys its VR, multiplicity and enumeration (a broken one is left out, never repaired)."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    values = list(element.value) if element.VM > 1 else [element.value]
    if keyword != "SpecificCharacterSet" and len(values) != 1:
        return False
    try:
        for value in values:
            validate_value(element.VR, str(value), config.RAISE)
    except Exception:
        return False
    if element.VR == "PN" and any(group.count("^") > 4 for group in str(values[0]).split("=")):
        return False
    allowed = _ENUMERATED.get(keyword)
    return allowed is None or values[0] in allowed


def read_source(data: bytes) -> SourceImage:
    """The input's header (pixels not read) reduced to the attributes the results copy or reference."""
    import pydicom
    from pydicom.dataset import Dataset

    quiet_pydicom()
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        kept = Dataset()
        for keyword in (*COPIED_ATTRIBUTES, *REFERENCE_ATTRIBUTES):
            element = header.data_element(keyword) if keyword in header else None
            if element is not None and not element.is_empty and _valid(keyword, element):
                kept.add(element)  # type 2 when left out: present and empty (below)
    except MemoryError:
        raise
    except Exception:
        raise BadImageError("could not parse the DICOM file") from None
    missing = [keyword for keyword in ("StudyInstanceUID", *REFERENCE_ATTRIBUTES) if keyword not in kept]
    if missing:
        raise InvalidInputError(f"DICOM results need the input's {', '.join(missing)}")
    for keyword in (*PATIENT_ATTRIBUTES, *STUDY_ATTRIBUTES):
        if keyword not in kept:
            setattr(kept, keyword, None)  # type 2: present, empty
    return SourceImage(kept)


def new_uid() -> str:
    from highdicom import UID

    return str(UID())


def _code(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value, CODING_SCHEME, meaning)


def class_code(name: str) -> Any:
    """The coded concept of one of the model's classes (``glioma`` -> ``(glioma, 99MRICLS, Glioma)``)."""
    return _code(name, _CLASS_MEANINGS.get(name, name))


def probability_code(name: str) -> Any:
    return _code(f"p_{name}", f"Probability of {_CLASS_MEANINGS.get(name, name).lower()}")


def _yes_no(value: bool) -> Any:
    from pydicom.sr.codedict import codes

    return codes.SCT.Yes if value else codes.SCT.No


def _coding_scheme() -> Any:
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return CodingSchemeIdentificationItem(
        designator=CODING_SCHEME,
        name="mri-classifier output concepts",
        responsible_organization=MANUFACTURER,
    )


def _device(algorithm: Algorithm) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    device_uid = generate_uid(entropy_srcs=[algorithm.name, algorithm.version, algorithm.data_fingerprint or ""])
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name=algorithm.name,
            manufacturer_name=MANUFACTURER,
            model_name=f"{algorithm.name} version {algorithm.version}",
        ),
    )


def _measurement_group(
    source: SourceImage, prediction: Prediction, algorithm: Algorithm, explained: str | None, identifier: str
) -> Any:
    """One TID 1501 measurement group: the four probabilities, the predicted class and the input check of one
    image, which it references as its source."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ref = source.dataset
    check = prediction.check
    evaluations = [
        hd.sr.QualitativeEvaluation(_code("predicted_class", "Predicted class"), class_code(prediction.label))
    ]
    if check is not None:
        evaluations += [
            hd.sr.QualitativeEvaluation(_code("input_warning", "Input check warning"), _yes_no(check.warning)),
            hd.sr.QualitativeEvaluation(_code("likely_mri", "Likely a brain MRI slice"), _yes_no(check.likely_mri)),
            hd.sr.QualitativeEvaluation(_code("confident", "Top probability over threshold"), _yes_no(check.confident)),
            hd.sr.QualitativeEvaluation(_code("familiar", "Like the training images"), _yes_no(check.familiar)),
        ]
        evaluations += [
            hd.sr.QualitativeEvaluation(_code("input_reason", "Input check reason"), _code(*REASON_CODES[reason]))
            for reason in check.reasons
        ]
    if explained is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(_code("explained_class", "Grad-CAM class"), class_code(explained))
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier=identifier),
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=algorithm.name, version=algorithm.version, parameters=algorithm.parameters or None
        ),
        measurements=[
            hd.sr.Measurement(
                name=probability_code(name),
                value=float(prediction.probabilities[name]),
                unit=codes.UCUM.NoUnits,
                algorithm_id=None,
            )
            for name in CLASSES
        ],
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup(str(ref.SOPClassUID), str(ref.SOPInstanceUID))],
    )


def _measurement_report(groups: list[Any], algorithm: Algorithm, comments: Sequence[str]) -> Any:
    """The TID 1500 content tree: the measurement groups, plus root-level comments (the first says it is not a
    diagnosis)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=_device(algorithm)),
        procedure_reported=codes.LN.BrainMRI,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    container = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations"),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=codes.DCM.Comment, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
            for text in (DISCLAIMER, *comments)
        ]
    )
    report[0].ContentSequence.append(container)
    return report


def _report(source: SourceImage, prediction: Prediction, algorithm: Algorithm, explained: str | None) -> Any:
    """The TID 1500 content tree of one image: one measurement group, plus a comment that it is not a diagnosis."""
    group = _measurement_group(source, prediction, algorithm, explained, "MRI slice classification")
    return _measurement_report([group], algorithm, ())


def _comprehensive_sr(
    evidence: list[Any],
    content: Any,
    algorithm: Algorithm,
    series_uid: str,
    series_number: int,
    series_description: str,
    instance_number: int,
) -> Any:
    """A final, complete, unverified Comprehensive SR of ``content`` in the evidence's study."""
    import highdicom as hd

    return hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=content,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        series_description=series_description,
        coding_schemes=[_coding_scheme()],
        is_complete=True,
        is_final=True,
        is_verified=False,
    )


def _encode(dataset: Any) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _build(what: str, build: Any) -> bytes:
    """Run a builder; any failure is a fixed 422 reason (values never quoted)."""
    quiet_pydicom()
    try:
        return _encode(build())
    except (ServiceError, MemoryError):
        raise
    except Exception:
        raise DicomResultError(f"could not build the DICOM {what} from this input's header") from None


def structured_report(
    source: SourceImage,
    prediction: Prediction,
    algorithm: Algorithm,
    series_uid: str,
    instance_number: int = 1,
    explained: str | None = None,
) -> bytes:
    """A Comprehensive SR (Part 10 bytes) in the input's study, in series ``series_uid``."""

    def build() -> Any:
        content = _report(source, prediction, algorithm, explained)
        return _comprehensive_sr(
            [source.dataset], content, algorithm, series_uid, SR_SERIES_NUMBER, SR_SERIES_DESCRIPTION, instance_number
        )

    return _build("structured report", build)


def secondary_capture(
    source: SourceImage,
    overlay_rgb: np.ndarray,
    algorithm: Algorithm,
    explained: str,
    series_uid: str,
    instance_number: int = 1,
) -> bytes:
    """A Secondary Capture (Part 10 bytes) of the Grad-CAM overlay (uint8 RGB), derived, not for diagnosis."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    ref = source.dataset

    def build() -> Any:
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ref,
            pixel_array=np.ascontiguousarray(overlay_rgb, dtype=np.uint8),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            patient_orientation=("L", "P"),  # replaced below: the overlay's orientation is not asserted
            series_instance_uid=series_uid,
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=new_uid(),
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=algorithm.name,
            software_versions=algorithm.version,
            series_description=SC_SERIES_DESCRIPTION,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
        )
        # General Image: padded and resized to the model's input, so no orientation is claimed (type 2C, empty).
        image.PatientOrientation = []
        image.Laterality = ""  # General Series, type 2C: the source's laterality is not copied
        image.BurnedInAnnotation = "NO"
        image.DerivationDescription = (
            f"Grad-CAM heatmap of class {explained} ({algorithm.name} version {algorithm.version}) blended on the "
            "model input (the source image padded to a square and resized). Not for diagnosis."
        )
        image.ImageComments = "NOT FOR DIAGNOSIS: AI explanation overlay (Grad-CAM), research use only."
        source_item = Dataset()
        source_item.ReferencedSOPClassUID = ref.SOPClassUID
        source_item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        purpose = hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
        source_item.PurposeOfReferenceCodeSequence = [purpose]
        image.SourceImageSequence = [source_item]
        return image

    return _build("secondary capture", build)


def series_summary_text(predictions: Sequence[Prediction]) -> str:
    """One line for a series: how many slices, how many of each predicted class, how many with a warning."""
    counts = {name: sum(p.label == name for p in predictions) for name in CLASSES}
    warned = sum(bool(p.check is not None and p.check.warning) for p in predictions)
    classes = ", ".join(f"{_CLASS_MEANINGS.get(name, name).lower()} {count}" for name, count in counts.items())
    return (
        f"Series summary: {len(predictions)} slice(s) classified one by one; predicted class per slice: {classes}; "
        f"{warned} slice(s) with an input check warning. The counts are not a finding about the patient."
    )


def series_report(
    slices: Sequence[tuple[SourceImage, Prediction]], algorithm: Algorithm, series_uid: str, instance_number: int = 1
) -> bytes:
    """A Comprehensive SR for the slices of one series: a measurement group per slice (its probabilities, class and
    check, referencing it) and the counts as a comment, with the not-a-diagnosis wording."""

    if not slices:
        raise DicomResultError("a series summary needs at least one slice")

    def build() -> Any:
        groups = [
            _measurement_group(source, prediction, algorithm, None, f"MRI slice {index}")
            for index, (source, prediction) in enumerate(slices, start=1)
        ]
        content = _measurement_report(groups, algorithm, [series_summary_text([p for _, p in slices])])
        return _comprehensive_sr(
            [source.dataset for source, _ in slices],
            content,
            algorithm,
            series_uid,
            SUMMARY_SERIES_NUMBER,
            SUMMARY_SERIES_DESCRIPTION,
            instance_number,
        )

    return _build("series summary", build)
