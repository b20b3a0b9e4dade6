"""A signed report as a DICOM Encapsulated PDF instance of its own study (PS3.3 A.45.1).

Why: a PACS or viewer that pulls the study (DICOMweb, C-GET, C-MOVE) gets the report with it,
without knowing telediag's API. The instance copies the patient and study attributes of the
study's first object, so every archive files it under the same patient and study; it is a new
series (Modality DOC) of its own, whose instance number is the report's version, and it holds
the very PDF the clinic downloads.

Pure: a parsed source data set and the PDF in, Part 10 bytes out. Its UIDs are derived from
the case, the study and the version (name-based UUIDs under 2.25), so building the same signed
version twice gives the same bytes, and storing it again is a re-send, not a second report.
"""

from __future__ import annotations

import io
import re
import uuid
from datetime import datetime, timedelta, timezone

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UID

from telediag import __version__

__all__ = ["ENCAPSULATED_PDF_STORAGE", "REPORT_SERIES_DESCRIPTION", "encapsulated_report", "report_uids"]

ENCAPSULATED_PDF_STORAGE = UID("1.2.840.10008.5.1.4.1.1.104.1")
REPORT_SERIES_DESCRIPTION = "telediag report"
#: A series number well above a modality's own (1, 2, 3 ...), so viewers list the report last.
REPORT_SERIES_NUMBER = 9900
#: When the study gives no Timezone Offset From UTC: the network's clocks are China Standard Time.
_DEFAULT_OFFSET = timedelta(hours=8)
#: The report's kind as the document's concept name (LOINC), which PACS use to tell reports apart.
_CONCEPTS = {"ecg": ("11524-6", "EKG study"), "imaging": ("18748-4", "Diagnostic imaging study")}

_PATIENT = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
_STUDY = ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
          "StudyDescription")
#: Type 2 attributes of those modules: present, empty when the source lacks them.
_TYPE2 = frozenset({"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"})


def report_uids(study_instance_uid: str, case_id: int, version: int) -> tuple[UID, UID]:
    """(Series Instance UID, SOP Instance UID) of a case's report: one series per case, one
    instance per version."""
    def uid(name: str) -> UID:
        return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}")

    base = f"telediag-report/{case_id}/{study_instance_uid}"
    return uid(base), uid(f"{base}/v{version}")


def encapsulated_report(source: Dataset, pdf: bytes, *, case_id: int, version: int, signed_at: datetime,
                        title: str, exam_kind: str) -> bytes:
    """The Encapsulated PDF Storage instance (Part 10 bytes) of a signed report version.

    ``source`` is any object of the study (its first one); ``signed_at`` is when the version
    was signed (its Content Date/Time, in the study's time zone); ``title`` is the Document
    Title; ``exam_kind`` is "ecg" or "imaging".
    """
    study = str(source.StudyInstanceUID)
    series_uid, sop_uid = report_uids(study, case_id, version)
    offset = _offset(source)
    local = signed_at.astimezone(timezone(offset))

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Chinese names and titles as they are
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = local.strftime("%Y%m%d")
    ds.InstanceCreationTime = local.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = _offset_text(offset)
    for keyword in _PATIENT + _STUDY:
        value = source.get(keyword)
        if value not in (None, ""):
            setattr(ds, keyword, str(value))  # as text: re-encoded in UTF-8 whatever the source's set
        elif keyword in _TYPE2:
            setattr(ds, keyword, "")
    # Encapsulated Document Series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = REPORT_SERIES_NUMBER
    ds.SeriesDescription = REPORT_SERIES_DESCRIPTION
    # General and SC Equipment: a workstation made the document
    ds.Manufacturer = "telediag"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    # Encapsulated Document
    ds.InstanceNumber = version
    ds.ContentDate = local.strftime("%Y%m%d")
    ds.ContentTime = local.strftime("%H%M%S")
    ds.AcquisitionDateTime = local.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the page names the patient
    ds.DocumentTitle = title
    code, meaning = _CONCEPTS["imaging" if exam_kind == "imaging" else "ecg"]
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = code, "LN", meaning
    ds.ConceptNameCodeSequence = [concept]
    if exam_kind == "imaging" and "SOPInstanceUID" in source:
        # The page shows the study's thumbnail: the instance it was drawn from (type 1C).
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
        ds.SourceInstanceSequence = [ref]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)  # OB values have an even length

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = "TELEDIAG"
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _offset(source: Dataset) -> timedelta:
    """The study's Timezone Offset From UTC ("+HHMM"), else China Standard Time."""
    m = re.fullmatch(r"([+-])(\d{2})(\d{2})", str(source.get("TimezoneOffsetFromUTC") or "").strip())
    if m is None:
        return _DEFAULT_OFFSET
    sign = -1 if m[1] == "-" else 1
    return sign * timedelta(hours=int(m[2]), minutes=int(m[3]))


def _offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
