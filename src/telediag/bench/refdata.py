"""Where the shared reference data (MIT-BIH, DICOM samples) lives on a developer machine.

The data is not shipped with the package; it sits beside the project tree at
``../shared/data`` or wherever ``TELEDIAG_SHARED_DATA`` points, so that no
machine-specific path is written into code.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shared_data_dir", "project_root"]


def project_root() -> Path:
    """Root of the source checkout (the directory holding ``src/``)."""
    return Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path | None:
    """The shared reference-data directory, or None if it is not available."""
    env = os.environ.get("TELEDIAG_SHARED_DATA")
    candidate = Path(env) if env else project_root() / ".." / "shared" / "data"
    return candidate.resolve() if candidate.is_dir() else None
