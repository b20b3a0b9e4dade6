"""ECG signal processing: readers, filtering, quality, QRS detection, beat analysis.

Pure functions, arrays in and arrays out, as in ``scipy.signal``; the only I/O in this
package is in ``readers``. Public entry points are re-exported here so callers need one
import.
"""

from .readers import detect_format, read_bytes, read_dicom_waveform, read_recording, read_wfdb, read_wfdb_files
from .recording import FORMATS, MEASUREMENT_KEYS, Recording, RecordingSource, WaveformError

__all__ = ["Recording", "RecordingSource", "WaveformError", "FORMATS", "MEASUREMENT_KEYS", "read_wfdb",
           "read_wfdb_files", "read_dicom_waveform", "read_recording", "read_bytes", "detect_format"]
