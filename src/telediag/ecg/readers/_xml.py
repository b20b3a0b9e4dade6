"""Safe, bounded XML parsing shared by the XML ECG readers (HL7 aECG, GE MUSE, Philips).

Every upload is untrusted: an XML ECG arrives from a cart, a PACS export or an operator's
laptop, so the parser must refuse the classic XML attacks (entity expansion "billion
laughs" and quadratic blowup, external entities reading local files) and must never let
one document take unbounded memory. ``defusedxml`` refuses every entity declaration and
external reference; on top of that the document size and the number of elements are
bounded here, so the tree built for any accepted document stays within a known budget.

:func:`root_tag` is separate and deliberately cheap: it runs on every upload for format
detection and only looks at the first few KB, without building a tree.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import xml.etree.ElementTree as ET

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from ..recording import WaveformError

__all__ = ["root_tag", "parse", "local", "text", "number", "base64_payload", "stack_columns", "standard_order",
           "STANDARD_LEADS", "MAX_XML_BYTES", "MAX_XML_ELEMENTS"]

#: Largest XML document accepted. A 10-s 12-lead file is 0.1-0.6 MB in every vendor format;
#: 16 MiB leaves room for ten minutes of 12-lead aECG digits while bounding memory.
MAX_XML_BYTES = 16 * 1024 * 1024
#: Largest number of elements accepted. The samples have at most ~1,500 (aECG with
#: per-beat annotations); an element costs a few hundred bytes in ElementTree, so this
#: bound (not the byte size alone) is what keeps a document of tiny empty elements small.
MAX_XML_ELEMENTS = 100_000

_HEAD_BYTES = 4096
# What may precede the root element: whitespace, the XML declaration, processing
# instructions, comments, and a DOCTYPE (with an optional internal subset).
_PROLOG_ITEM = re.compile(
    r"\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[[^\]]*\][^>]*)?>",
    re.DOTALL | re.IGNORECASE,
)
_START_TAG = re.compile(r"<(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")
# A declaration saying UTF-16 in a document whose bytes are single-byte ASCII markup: .NET
# exporters that write through a string and save as UTF-8 produce this, and expat refuses it.
_WHITESPACE = re.compile(rb"\s+")
_FALSE_UTF16 = re.compile(rb"^(\s*<\?xml[^>]*?encoding\s*=\s*[\"'])utf-16(?:le|be)?([\"'])", re.IGNORECASE)


def _decode_head(head: bytes) -> str:
    """The first bytes as text, from the BOM or the byte pattern of '<' (XML 1.0 appendix F)."""
    if head.startswith(b"\xef\xbb\xbf"):
        codec, head = "utf-8", head[3:]
    elif head.startswith(b"\xff\xfe"):
        codec, head = "utf-16-le", head[2:]
    elif head.startswith(b"\xfe\xff"):
        codec, head = "utf-16-be", head[2:]
    elif head.startswith(b"<\x00"):
        codec = "utf-16-le"
    elif head.startswith(b"\x00<"):
        codec = "utf-16-be"
    else:
        # UTF-8 and every single-byte encoding agree on the ASCII markup we look for.
        codec = "latin-1"
    if codec.startswith("utf-16"):
        head = head[: len(head) // 2 * 2]
    return head.decode(codec, errors="replace")


def root_tag(data: bytes) -> str | None:
    """Local name of the document's root element from the first 4 KB, or None if not XML.

    Only the prolog is scanned (declaration, comments, DOCTYPE), so the cost is constant
    whatever the upload's size; binary formats fail on their first byte.
    """
    text = _decode_head(bytes(data[:_HEAD_BYTES]))
    if not text:
        return None
    pos = 0
    while pos < len(text):
        m = _PROLOG_ITEM.match(text, pos)
        if m is None:
            break
        pos = m.end()
    m = _START_TAG.match(text, pos)
    return m.group(1) if m else None


class _BoundedTreeBuilder(ET.TreeBuilder):
    """A TreeBuilder that refuses a document with more than ``limit`` elements."""

    def __init__(self, limit: int, fmt: str) -> None:
        super().__init__()
        self._left = limit
        self._fmt = fmt

    def start(self, tag, attrs):  # type: ignore[no-untyped-def]
        self._left -= 1
        if self._left < 0:
            raise WaveformError(f"document has more than {MAX_XML_ELEMENTS} elements", format=self._fmt)
        return super().start(tag, attrs)


def local(tag: str) -> str:
    """An element or attribute name without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1] if tag[:1] == "{" else tag


def parse(data: bytes, *, format: str, fold_case: bool = False) -> ET.Element:
    """Parse an untrusted XML document into an ElementTree with namespace-free tags.

    Tags are reduced to their local names because generators disagree on namespaces
    (declared, prefixed, or missing altogether); ``fold_case`` also lowercases them for
    formats whose generators disagree on case. Raises :class:`WaveformError` naming
    ``format`` for a document that is too large, has too many elements, declares entities,
    refers to external resources, or is not well-formed.
    """
    if len(data) > MAX_XML_BYTES:
        raise WaveformError(
            f"document is {len(data) // (1024 * 1024)} MiB, above the {MAX_XML_BYTES // (1024 * 1024)} MiB limit",
            format=format)
    if not data.strip():
        raise WaveformError("document is empty", format=format)
    if _FALSE_UTF16.match(data[:256]):
        data = _FALSE_UTF16.sub(rb"\1UTF-8\2", bytes(data[:256]), count=1) + bytes(data[256:])
    parser = DefusedXMLParser(target=_BoundedTreeBuilder(MAX_XML_ELEMENTS, format),
                              forbid_dtd=False, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root = parser.close()
    except WaveformError:
        raise
    except DefusedXmlException as exc:
        # The exception text can quote entity values (document content): name the kind only.
        raise WaveformError(f"refused: {type(exc).__name__} (entity declarations and external "
                            "references are not allowed)", format=format) from None
    except ET.ParseError as exc:
        raise WaveformError(f"not well-formed XML ({exc})", format=format) from None
    except (LookupError, ValueError) as exc:  # unknown declared encoding
        raise WaveformError(f"cannot decode the document ({type(exc).__name__})", format=format) from None
    for el in root.iter():
        tag = local(el.tag) if isinstance(el.tag, str) else ""
        el.tag = tag.lower() if fold_case else tag
    return root


# --------------------------------------------------------------------------
# Small helpers the three XML readers share
# --------------------------------------------------------------------------


def text(el: ET.Element | None, path: str = "") -> str | None:
    """Stripped text of ``el`` (or of its first descendant at ``path``); None when absent or blank."""
    if el is not None and path:
        el = el.find(path)
    value = (el.text or "").strip() if el is not None else ""
    return value or None


def number(value: str | None) -> float | None:
    """A finite float from element text, or None for absent/non-numeric text ("Failed", "")."""
    if value is None:
        return None
    try:
        result = float(value)
    except ValueError:
        return None
    return result if math.isfinite(result) else None


#: The conventional display order of the 12 standard leads; other leads follow in file order.
STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def standard_order(names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` with the 12 standard leads first, in display order, so every XML reader
    hands the DSP the same column layout whatever order the vendor stored them in."""
    return [n for n in STANDARD_LEADS if n in names] + [n for n in names if n not in STANDARD_LEADS]


def base64_payload(payload: str | None, *, format: str, section: str) -> bytes:
    """Decode a base64 element text strictly (line breaks allowed, any other stray byte refused),
    so that damaged data is reported instead of silently skipped as the lenient decoder does."""
    try:
        return base64.b64decode(_WHITESPACE.sub(b"", (payload or "").encode("ascii")), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise WaveformError("waveform data is not valid base64", format=format, section=section) from None


def stack_columns(columns: list[np.ndarray]) -> np.ndarray:
    """Leads of possibly different lengths as one (n_samples, n_leads) array, NaN-padded.

    Vendors may store a shorter lead (e.g. a lead that came off); NaN marks those samples
    as missing, as the Recording contract says, instead of refusing the whole exam.
    """
    n = max(len(c) for c in columns)
    out = np.full((n, len(columns)), np.nan)
    for j, col in enumerate(columns):
        out[: len(col), j] = col
    return out
