"""What the DICOM node sends back for a series, made with highdicom: a Secondary Capture of the QA picture
and an Enhanced SR that names the L3 slice (its SOPInstanceUID, z, confidence, review) in the same study.

Both copy the patient and study attributes from a header of the series (highdicom does), and get UIDs
derived from the series' UID and the model's version, so a series sent twice (a restart) gives the same
instances and the PACS keeps one copy. Codes are l3edge's own (scheme ``99L3EDGE``) except where DICOM has
one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from l3edge.result import L3Result

SCHEME = "99L3EDGE"
SC_SERIES_NUMBER, SR_SERIES_NUMBER = 9901, 9902


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["l3edge", *parts]))


def qa_capture(ref: Dataset, qa_png: Path, result: L3Result) -> Dataset:
    """The QA picture as a Secondary Capture image in the study of ``ref`` (a header of the series)."""
    import highdicom as hd
    from PIL import Image

    rgb = np.asarray(Image.open(qa_png).convert("RGB"))
    key = (ref.SeriesInstanceUID, result.model.get("version", ""), result.level)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),
        series_instance_uid=_uid(*key, "sc-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=_uid(*key, "sc"),
        instance_number=1,
        manufacturer="l3edge",
    )
    sc.SeriesDescription = f"l3edge QA {result.level}"
    return sc


def level_report(ref: Dataset, result: L3Result) -> Dataset:
    """An Enhanced SR naming the slice of ``result.level``: the slice (image reference), z, confidence and
    whether a person should review it; 'not found' when the level is not in the scan."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import CTImageStorage

    def code(value: str, meaning: str) -> hd.sr.CodedConcept:
        return hd.sr.CodedConcept(value, SCHEME, meaning)

    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items: list[hd.sr.ContentItem] = [
        hd.sr.TextContentItem(code("LEVEL", "Vertebral level"), result.level, relationship_type=contains),
        hd.sr.TextContentItem(
            code("FOUND", "Level found"), "yes" if result.found else "no", relationship_type=contains
        ),
    ]
    if result.found and result.sop_instance_uid:
        items.append(
            hd.sr.ImageContentItem(
                hd.sr.CodedConcept("121112", "DCM", "Source of Measurement"),
                CTImageStorage,
                result.sop_instance_uid,
                relationship_type=contains,
            )
        )
    if result.found and result.z_mm is not None:
        items.append(
            hd.sr.NumContentItem(
                code("ZMM", "Patient z of the level"),
                result.z_mm,
                codes.UCUM.Millimeter,
                relationship_type=contains,
            )
        )
    items += [
        hd.sr.NumContentItem(
            code("CONF", "Confidence"),
            result.confidence,
            hd.sr.CodedConcept("1", "UCUM", "no units"),
            relationship_type=contains,
        ),
        hd.sr.TextContentItem(
            code("REVIEW", "Review needed"), "yes" if result.review else "no", relationship_type=contains
        ),
        hd.sr.TextContentItem(
            code("MODEL", "Model"),
            f"{result.model.get('name', '')} {result.model.get('version', '')}".strip() or "unknown",
            relationship_type=contains,
        ),
    ]
    root = hd.sr.ContainerContentItem(code("REPORT", "l3edge vertebral level report"))
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    key = (ref.SeriesInstanceUID, result.model.get("version", ""), result.level)
    sr = hd.sr.EnhancedSR(
        evidence=[ref],
        content=root,
        series_instance_uid=_uid(*key, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid(*key, "sr"),
        instance_number=1,
        manufacturer="l3edge",
        is_complete=True,
    )
    sr.SeriesDescription = f"l3edge {result.level}"
    return sr


def send(datasets: list[Dataset], to: str, calling_ae: str, timeout_s: float = 30.0) -> None:
    """C-STORE ``datasets`` to ``to`` (``AE@HOST:PORT``) in one association.

    Raises:
        OSError: no association, or a store refused (the message says which status).
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    ae_title, _, address = to.partition("@")
    host, _, port = address.rpartition(":")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(host, int(port), ae_title=ae_title)
    if not assoc.is_established:
        raise OSError(f"no association with {to}")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code != 0:
                raise OSError(f"{to} refused a {ds.SOPClassUID.name} (status {code})")
    finally:
        assoc.release()


def check_send_to(to: str) -> None:
    """Raises UsageError unless ``to`` reads ``AE@HOST:PORT``."""
    from l3edge.errors import UsageError

    ae_title, _, address = to.partition("@")
    host, _, port = address.rpartition(":")
    if not (0 < len(ae_title) <= 16 and host and port.isdigit()):
        raise UsageError(f"--send-to must be AE@HOST:PORT, not {to!r}")
