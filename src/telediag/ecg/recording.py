"""The one in-memory ECG type every reader produces and every DSP stage consumes.

Keeping a single, small, immutable type means the DSP code never has to know
which device or file format a trace came from: it only sees a sampling rate,
lead names and physical millivolts. What the file itself says about the exam (the
format, the patient and the cart, and the cart's own measurements and statements)
travels beside the signal in :class:`RecordingSource`, so a reader can show the
cart's interpretation next to telediag's without the DSP ever reading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Mapping

import numpy as np

__all__ = ["Recording", "RecordingSource", "WaveformError", "MEASUREMENT_KEYS", "FORMATS"]

#: Keys of a global 12-lead measurement set, ours (``analyze``) and the cart's alike.
MEASUREMENT_KEYS: tuple[str, ...] = ("pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "qrs_axis_deg", "heart_rate_bpm",
                                     "p_axis_deg", "t_axis_deg")

#: Formats a reader can produce, by the name ingest records and the API reports.
FORMATS: tuple[str, ...] = ("wfdb", "dicom", "scp-ecg", "hl7-aecg", "ge-muse", "philips-xml")


class WaveformError(ValueError):
    """The one error type for unreadable/invalid waveform input.

    The message says what is wrong in plain words, because ingest sends it back
    to the acquiring device/operator; it must never contain patient data. Readers of
    structured formats name the ``format`` and the ``section`` (an SCP-ECG section
    number, an XML element path) so the sender can find the fault.
    """

    def __init__(self, message: str, *, format: str | None = None, section: str | None = None) -> None:
        prefix = " ".join(p for p in (format, f"section {section}" if section else None) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.format = format
        self.section = section
        self.reason = message


@dataclass(frozen=True)
class RecordingSource:
    """What the file says about the exam, besides the signal.

    Attributes:
        format: one of :data:`FORMATS` (empty when built in memory).
        patient_id, patient_name, patient_sex ("M"/"F"/"O"), patient_birth_date (YYYYMMDD):
            as the cart recorded them; None when absent.
        manufacturer, model, serial: the acquiring device as the file names it.
        measurements: the cart's own global measurements, keyed by :data:`MEASUREMENT_KEYS`
            (only the ones the file holds).
        statements: the cart's interpretation statements, in the file's order.
        median_beats: the cart's representative beat per lead, when the file carries one,
            as (fs, leads, signals in mV with shape (n_samples, n_leads)).
    """

    format: str = ""
    patient_id: str | None = None
    patient_name: str | None = None
    patient_sex: str | None = None
    patient_birth_date: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    measurements: Mapping[str, float] = field(default_factory=dict)
    statements: tuple[str, ...] = ()
    median_beats: tuple[float, tuple[str, ...], np.ndarray] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.measurements) - set(MEASUREMENT_KEYS)
        if unknown:
            raise ValueError(f"unknown measurement keys {sorted(unknown)}")
        object.__setattr__(self, "measurements", MappingProxyType(
            {k: float(v) for k, v in self.measurements.items() if v is not None and np.isfinite(v)}))
        object.__setattr__(self, "statements", tuple(str(s) for s in self.statements if str(s).strip()))

    def __repr__(self) -> str:  # no PHI in logs or tracebacks
        return f"RecordingSource(format={self.format!r}, model={self.model!r})"


@dataclass(frozen=True)
class Recording:
    """A multi-lead ECG in physical units.

    Attributes:
        fs: sampling frequency in Hz (one value for all leads).
        leads: lead names, normalised where known ("I", "II", "V1", "MLII", ...).
        signals: float64 array, shape (n_samples, n_leads), millivolts. NaN marks
            samples the source declared invalid/missing (e.g. WFDB gaps).
        start_time: acquisition start if the source states it, else None.
        source: what the file says besides the signal (format, patient, cart, the cart's
            measurements and statements).
        pulsatile: pulsatile channels recorded beside the ECG (arterial pressure, pleth/PPG),
            name -> (fs, samples in physical units); rhythm analysis uses them to confirm
            or refute asystole/VT/VF, as ICU monitors do. Empty for ECG-only sources.
    """

    fs: float
    leads: tuple[str, ...]
    signals: np.ndarray
    start_time: datetime | None = None
    source: RecordingSource = field(default_factory=RecordingSource)
    pulsatile: Mapping[str, tuple[float, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Validate once here so that downstream code can rely on the shape
        # contract instead of re-checking it in every DSP function.
        sig = np.asarray(self.signals, dtype=np.float64)
        if sig.ndim != 2:
            raise WaveformError(f"signals must be 2-D (n_samples, n_leads), got {sig.ndim}-D")
        if sig.shape[0] == 0 or sig.shape[1] == 0:
            raise WaveformError("recording has no samples or no leads")
        if sig.shape[1] != len(self.leads):
            raise WaveformError(
                f"{sig.shape[1]} signal columns but {len(self.leads)} lead names"
            )
        if not (np.isfinite(self.fs) and self.fs > 0):
            raise WaveformError(f"invalid sampling frequency {self.fs!r}")
        object.__setattr__(self, "signals", sig)
        object.__setattr__(self, "leads", tuple(str(x) for x in self.leads))
        object.__setattr__(self, "fs", float(self.fs))

    @classmethod
    def from_channels(cls, fs: float, leads: list[str], columns: list[np.ndarray], what: str,
                      **details) -> "Recording":
        """A recording of the voltage channels a reader kept (it skips pressures and other
        non-ECG channels); ``what`` names the source in the error when none was left."""
        if not columns:
            raise WaveformError(f"{what} has no voltage (ECG) channels")
        return cls(fs=fs, leads=tuple(leads), signals=np.column_stack(columns), **details)

    @property
    def duration_s(self) -> float:
        """Length of the recording in seconds."""
        return self.signals.shape[0] / self.fs

    @property
    def n_samples(self) -> int:
        return int(self.signals.shape[0])
