"""Locate dcmtk's command-line tools (the stock DICOM sender the benchmarks and tests use)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def find_dcmtk(tool: str) -> str | None:
    """The dcmtk build of ``tool`` (``storescu``, ``echoscu``) on PATH, or None.

    pynetdicom installs Python apps of the same names into the interpreter's bin folder,
    which often comes first on PATH; those (and pyenv shims) are skipped by asking each
    candidate for its version.
    """
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / tool
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        try:
            with open(candidate, "rb") as fh:
                if fh.read(2) == b"#!":  # a script: pynetdicom's app or a shim, not dcmtk
                    continue
            out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=10,
                                 stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return str(candidate)
    return None
