"""ECG signal processing: readers, filtering, quality, QRS detection, beat analysis.

Public entry points are re-exported here so callers need one import.
"""

from .io import read_dicom_waveform, read_recording, read_wfdb
from .recording import Recording, WaveformError

__all__ = ["Recording", "WaveformError", "read_wfdb", "read_dicom_waveform", "read_recording"]
