"""The one in-memory ECG type every reader produces and every DSP stage consumes.

Keeping a single, small, immutable type means the DSP code never has to know
which device or file format a trace came from: it only sees a sampling rate,
lead names and physical millivolts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

__all__ = ["Recording", "WaveformError"]


class WaveformError(ValueError):
    """The one error type for unreadable/invalid waveform input.

    The message says what is wrong in plain words, because ingest sends it back
    to the acquiring device/operator; it must never contain patient data.
    """


@dataclass(frozen=True)
class Recording:
    """A multi-lead ECG in physical units.

    Attributes:
        fs: sampling frequency in Hz (one value for all leads).
        leads: lead names, normalised where known ("I", "II", "V1", "MLII", ...).
        signals: float64 array, shape (n_samples, n_leads), millivolts. NaN marks
            samples the source declared invalid/missing (e.g. WFDB gaps).
        start_time: acquisition start if the source states it, else None.
    """

    fs: float
    leads: tuple[str, ...]
    signals: np.ndarray
    start_time: datetime | None = None

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

    @property
    def duration_s(self) -> float:
        """Length of the recording in seconds."""
        return self.signals.shape[0] / self.fs

    @property
    def n_samples(self) -> int:
        return int(self.signals.shape[0])
