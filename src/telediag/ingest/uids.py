"""DICOM UID syntax (PS3.5 section 9.1), checked before a UID names anything.

Storage keys are built from UIDs, so a UID is checked here before it becomes part of a
key: a StudyInstanceUID of ``..`` or a SOP Instance UID of ``1.2.3/sub/dir`` is a refusal
with the reason, never a path.
"""

from __future__ import annotations

import re

#: Components of digits without leading zeros (a lone "0" is allowed), separated by dots.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
MAX_UID_LENGTH = 64


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not a valid UID, or None when it is one."""
    if not value:
        return "is empty"
    if len(value) > MAX_UID_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_UID_LENGTH})"
    if _UID.fullmatch(value) is None:
        return "is not digits and dots without leading zeros (PS3.5 9.1)"
    return None


def printable(value: str, limit: int = 70) -> str:
    """A received value made safe to echo in a reason or a log line (control characters
    escaped, length bounded), since it was not valid and may be anything."""
    text = value.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."
