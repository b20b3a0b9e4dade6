"""A Recording as a DICOM 12-lead (or General) ECG Waveform object.

Carts that export SCP-ECG or XML produce no DICOM, yet a PACS or a DICOMweb viewer can
only show a DICOM ECG; this builds one from any decoded recording (samples in 1 uV
steps as signed 16-bit, leads coded with their SCP-ECG codes), and the benchmarks and
tests use it to make realistic objects. Pure: it returns a pydicom Dataset, writing is the
caller's business.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .readers.leads import SCP_LEADS
from .recording import Recording, WaveformError

TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"
GENERAL_ECG = "1.2.840.10008.5.1.4.1.1.9.1.2"
_SCP_CODE = {name: code for code, name in SCP_LEADS.items()}
#: 12-lead ECG Waveform Storage allows at most 13 channels, 5 to 15 s at up to 1 kHz (PS3.3 A.34.3).
_TWELVE_LEAD_LIMITS = (13, 16384)


def to_dicom_ecg(rec: Recording, *, study_instance_uid: str | None = None,
                 series_instance_uid: str | None = None, sop_instance_uid: str | None = None) -> Dataset:
    """A Part 10-ready data set (with file meta) holding ``rec``'s signals and what its
    source says of the patient and the cart; new UIDs unless given."""
    uv = np.nan_to_num(rec.signals * 1000.0)
    if np.abs(uv).max(initial=0) > 32767:
        raise WaveformError("signal exceeds +-32.767 mV, the range of 16-bit samples at 1 uV")
    samples = np.round(uv).astype("<i2")
    twelve = len(rec.leads) <= _TWELVE_LEAD_LIMITS[0] and rec.n_samples <= _TWELVE_LEAD_LIMITS[1]
    sop_class = TWELVE_LEAD_ECG if twelve else GENERAL_ECG
    src = rec.source
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.Modality = "ECG"
    ds.PatientName = src.patient_name or ""
    ds.PatientID = src.patient_id or ""
    ds.PatientSex = src.patient_sex or ""
    ds.PatientBirthDate = src.patient_birth_date or ""
    when = rec.start_time or datetime.now()
    ds.StudyDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.Manufacturer = src.manufacturer or ""
    if src.model:
        ds.ManufacturerModelName = src.model
    ds.InstanceNumber = 1
    ds.SeriesNumber = 1
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.WaveformSequence = Sequence([_group(rec, samples)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _group(rec: Recording, samples: np.ndarray) -> Dataset:
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0.0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = samples.shape[1]
    group.NumberOfWaveformSamples = samples.shape[0]
    group.SamplingFrequency = f"{rec.fs:g}"
    group.MultiplexGroupLabel = "RHYTHM"
    group.ChannelDefinitionSequence = Sequence([_channel(name) for name in rec.leads])
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = np.ascontiguousarray(samples).tobytes()
    return group


def _channel(lead: str) -> Dataset:
    source = Dataset()
    code = _SCP_CODE.get(lead)
    if code is not None:
        source.CodeValue = f"5.6.3-9-{code}"
        source.CodingSchemeDesignator = "SCPECG"
        source.CodingSchemeVersion = "1.3"
    else:
        source.CodeValue = lead
        source.CodingSchemeDesignator = "99TELEDIAG"
    source.CodeMeaning = f"Lead {lead}"
    unit = Dataset()
    unit.CodeValue = "uV"
    unit.CodingSchemeDesignator = "UCUM"
    unit.CodeMeaning = "microvolt"
    ch = Dataset()
    ch.ChannelSourceSequence = Sequence([source])
    ch.ChannelSensitivity = "1.0"
    ch.ChannelSensitivityUnitsSequence = Sequence([unit])
    ch.ChannelSensitivityCorrectionFactor = "1.0"
    ch.ChannelBaseline = "0.0"
    ch.ChannelSampleSkew = "0.0"
    ch.WaveformBitsStored = 16
    return ch
