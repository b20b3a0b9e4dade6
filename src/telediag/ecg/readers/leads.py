"""Lead names and signal units shared by every reader.

Carts spell leads many ways ("Lead I (Einthoven)", "MDC_ECG_LEAD_V1", SCP-ECG code 3);
every reader maps them to one set of names here, and every reader converts amplitudes to
millivolts through one table, so the DSP never sees a vendor spelling or a wrong scale.
"""

from __future__ import annotations

import re

from ..recording import WaveformError

__all__ = ["normalise_lead_name", "scp_lead_name", "mv_factor", "SCP_LEADS"]

# --------------------------------------------------------------------------
# Lead names
# --------------------------------------------------------------------------

# SCP-ECG lead codes (EN 1064 / ISO 11073-91064), shared by the DICOM CID 3001
# "SCPECG 5.6.3-9-N" codes and the MDC "2:N" ECG lead codes (MDC_ECG_LEAD_*).
SCP_LEADS: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    9: "V7", 10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R",
    16: "X", 17: "Y", 18: "Z", 19: "CC5", 20: "CM5", 21: "LA", 22: "RA", 23: "LL",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR", 66: "V8", 67: "V9",
    68: "V8R", 69: "V9R",
}
_CANONICAL = {name.upper(): name for name in SCP_LEADS.values()}
_CANONICAL |= {"MLII": "MLII", "MLI": "MLI", "MLIII": "MLIII"}
_SCP_CODE = re.compile(r"^5\.6\.3-9-(\d+)$")
_MDC_CODE = re.compile(r"^2:(\d+)$")
_BARE_CODE = re.compile(r"^(\d+)$")


def normalise_lead_name(name: str) -> str:
    """Map vendor spellings ("Lead I (Einthoven)", "lead avr", "MDC_ECG_LEAD_V1") to "I", "aVR", "V1".

    Unknown names are returned stripped but otherwise unchanged, so that no
    information is lost for leads we do not recognise.
    """
    s = name.strip()
    s = re.sub(r"\s*\(.*?\)\s*", "", s)  # "(Einthoven)", "(Goldberger)", ...
    s = re.sub(r"^(MDC_ECG_LEAD_|LEAD\s*)", "", s, flags=re.IGNORECASE).strip()
    return _CANONICAL.get(s.upper(), s or name.strip())


def scp_lead_name(code: str) -> str | None:
    """The lead named by a coded value: SCP-ECG "5.6.3-9-N", MDC "2:N" or a bare SCP number."""
    value = code.strip()
    for pattern in (_SCP_CODE, _MDC_CODE, _BARE_CODE):
        m = pattern.match(value)
        if m and int(m.group(1)) in SCP_LEADS:
            return SCP_LEADS[int(m.group(1))]
    return None


# --------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------

_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6, "kv": 1e6}
# Non-voltage channels that legitimately share a waveform object with ECG
# (e.g. Hemodynamic Waveform: pressures, respiration). They are dropped, not
# rejected; a unit we know nothing about is an error.
_NON_ECG_UNITS = {
    "mm[hg]", "mmhg", "kpa", "cm[h2o]", "cmh2o", "%", "cel", "degc", "l/min", "ml/s",
    "l/s", "ml", "l", "ohm", "{beats}/min", "/min", "1/min", "nu", "1", "{ratio}",
}


def mv_factor(unit: str) -> float | None:
    """Multiplier to millivolts, or None for a known non-voltage unit.

    Raises WaveformError for units we cannot interpret, so that a wrongly
    scaled trace never reaches the analysis.
    """
    key = unit.strip().replace("\u00b5", "µ").lower()
    if key in _TO_MV:
        return _TO_MV[key]
    if key in _NON_ECG_UNITS:
        return None
    raise WaveformError(f"unknown signal units {unit.strip()!r}; expected uV, mV or V")


