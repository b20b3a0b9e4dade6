"""Test data: synthetic ECGs and the DICOM objects made from them."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from telediag.ecg import Recording, RecordingSource
from telediag.ecg.dicom_out import to_dicom_ecg

FS = 500
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def synthetic_ecg_uv(hr_bpm: float = 72.0, seed: int = 1, seconds: float = 10.0) -> np.ndarray:
    """A plausible 12-lead sinus rhythm (P, QRS, T Gaussians, lead-specific gains) in uV, int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(FS * seconds)) / FS
    rr = 60.0 / hr_bpm
    beats = np.arange(0.3, seconds, rr)
    waves = [(-0.20, 0.025, 0.15), (-0.03, 0.008, -0.1), (0.0, 0.010, 1.2), (0.03, 0.010, -0.25), (0.25, 0.040, 0.3)]
    lead_ii = np.zeros_like(t)
    for b in beats:
        for off, width, amp in waves:
            lead_ii += amp * np.exp(-0.5 * ((t - b - off) / width) ** 2)
    gains = [0.6, 1.0, 0.4, -0.8, 0.1, 0.7, -0.5, 0.3, 0.8, 1.2, 1.1, 0.9]
    sig_mv = np.column_stack([g * lead_ii + 0.02 * rng.standard_normal(t.size) for g in gains])
    return np.round(sig_mv * 1000.0).astype("<i2")


def ecg_dataset(samples_uv: np.ndarray) -> Dataset:
    """A 12-lead ECG Waveform Storage data set around ``samples_uv`` (n x 12, int16, uV)."""
    rec = Recording(FS, LEADS, samples_uv.astype(np.float64) / 1000.0,
                    source=RecordingSource(patient_name="BENCH^SYNTHETIC", patient_id="BENCH0001", patient_sex="O",
                                           patient_birth_date="19700101", manufacturer="telediag tests"))
    return to_dicom_ecg(rec)


def part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def ecg_objects_of_one_study(n: int) -> list[bytes]:
    """``n`` distinct short 12-lead ECG objects (own SOP Instance and Series UIDs) of one new
    study, as Part 10 bytes."""
    ds = ecg_dataset(synthetic_ecg_uv()[:1000])
    ds.StudyInstanceUID = generate_uid()
    out = []
    for _ in range(n):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        out.append(part10(ds))
    return out
