"""Rhythm episodes over a whole recording: sinus, brady/tachy, AF, SVT, VT, VF, pauses, unreadable.

Why this design: the rhythm is decided from the stages that already exist
(QRS detection, N/V/Q beat classes, signal quality) plus signal-level second
opinions for what beat detection and beat classification cannot see. The
signal-level functions run per chunk of signal (see ``analysis``); the
beat-level :func:`detect_rhythm` then runs once over the whole beat series.

* **VF/VFL** from the raw ECG (:func:`oscillation_blocks`), because QRS detection
  fails or invents beats in a fibrillatory waveform. Per 2-s block (a 4-s
  window) and usable lead the 1-20 Hz band is tested for the two properties
  published VF detectors rest on: the power is concentrated around one
  dominant frequency of 2.5-9 Hz (150-540 /min; a QRS spreads its power over
  many harmonics), and there is no isoelectric line. Every lead carrying
  signal must agree, because motion artefact is often confined to one lead.
  The same spectra with the peak at 100-150 /min mark a **sine-wave VT**
  (:func:`oscillation_blocks`), a wide-complex rhythm whose QRS and T merge
  into one sinusoid; both (and VF itself) also count as ventricular runs for
  the VT rules, since QRS detection cannot make runs out of them.
* **Pulsatile channels** (ABP, pleth; :func:`pulse_beats`): a regular pulse
  clearly faster than an ECG pause allows refutes the pause/asystole, one
  over a "VF" stretch refutes VF, and (in the rules) one well above the limit
  refutes an ECG bradycardia, as ICU monitors and the best methods of the 2015
  PhysioNet challenge do. A pulse refutes a VT run only when it goes on
  unchanged through it, slower than the run (:func:`_pulse_unperturbed`: a
  run the ventricles followed changes the pulse); VT with a pulse is common,
  and whether one was found is kept in the VT evidence. Where a cluster of
  ventricular beats holds more pulses than ECG beats, the run is counted on
  the pulse (:func:`_pulse_counted_runs`: the detector missed complexes).
* **Noise without rhythm** (:func:`disorganised_blocks`): signal quality
  judges a lead against its own typical QRS, so a lead carrying only noise
  looks usable; blocks whose QRS-band envelope never returns to a floor, and
  whose detections are not regular, are unreadable, never an arrhythmia.
* **Missed beats** (:func:`qrs_activity`): a beat-free gap still holding
  QRS-sized activity is a detector miss, never a pause.
* **Ventricular shape** (:func:`shape_correlation`): correlation with the
  conducted QRS of the whole chunk, which keeps a sustained ventricular rhythm
  "ventricular" where the beat classifier's per-minute template has adopted it;
  and (:func:`successive_correlation`) with the neighbouring beat, which grows
  a run by the end complexes that repeat it (see :func:`_ventricular_runs`).

AF, with global settings chosen on the 22 MIT-BIH DS1 records (AF in 201 and
203 only; nothing per record): per beat, the median absolute successive RR
difference over a 32-interval window divided by the median RR, on intervals
between two N beats (so isolated ectopic beats, bigeminy and their
compensatory pauses do not count), above 0.10 (sinus rhythm stays below 0.07
on every DS1 record, AF above 0.12 in 90 % of its beats); unless the
pre-QRS segments repeat a P wave (:func:`atrial_consistency`, which removes
sinus rhythm with irregular conduction such as the second-degree block of
201); a 15-beat majority vote; episodes of at least 30 s.

**Atrial flutter** (``afl``, :func:`telediag.ecg.atrial.flutter_rate`):
where the ventricular response is irregular, a train of identical atrial
waves at 220-370 /min locked to the QRS (flutter is conducted at a fixed
phase, AF's f waves are not) in the average of the pre-QRS segments; it
takes precedence over the RR-based ``af`` (a 15-beat majority, episodes of
at least 30 s), and its episodes carry the atrial rate.

**AV block** (``av_block``, :func:`_av_blocks`, from P waves found in the
QRST-cancelled signal, :func:`telediag.ecg.atrial.p_wave_findings`; only at
``P_MIN_FS`` or more): degree 3 where regular P waves march through a slow,
regular ventricular rhythm with a wandering PR; degree 2 where a P wave
midway between two conducted ones has no QRS after it, again and again,
the conduction resuming the same way (pattern ``constant_pr``,
``progressive_pr`` or ``2:1``). None of the AV-block or flutter thresholds
was set on a record that has either (DS1 has no AV block and only a
flutter this method cannot tell from its AF, see :mod:`telediag.ecg.atrial`).

Labels are a non-overlapping timeline, with this precedence (highest first):
``unreadable`` (no usable lead or noise: never an arrhythmia), ``vf``,
``asystole``, ``vt``, ``pause``, ``svt``, ``av_block``, then the background
rhythm of each beat (``afl``, ``af``, ``sinus_bradycardia``,
``sinus_tachycardia``, ``sinus``, ``other`` for a ventricular or
unclassifiable background).

Approximations, said plainly: "sinus" means a regular supraventricular rhythm
(P waves are used to veto AF and to find AV block, not to confirm sinus);
atrial flutter with a fixed conduction ratio (2:1 above all) looks like
sinus tachycardia, SVT or sinus here, and flutter not locked to the QRS
(coarse AF-like, atypical) stays ``af``; AV block is found only where its P
waves are clear of the QRS and T waves (a non-conducted P wave hidden in a
T wave, 2:1 block at atrial rates above about 80 /min, and first-degree
block are not reported); ``paced`` needs pacing spikes, which are only
resolvable at >= 400 Hz (so 12-lead resting ECGs, not Holters analysed at
250 Hz). VT sensitivity is bounded by the beat classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, signal

from .atrial import P_FIELDS, T_END_S, flutter_rate, p_wave_findings
from .filters import bandpass_rows
from .measure import median_beats

__all__ = ["Episode", "RhythmResult", "LABELS", "low_band", "oscillation_blocks", "atrial_consistency", "pulse_beats",
           "qrs_activity", "disorganised_blocks", "shape_correlation", "successive_correlation", "paced_beats",
           "detect_rhythm", "st_t_levels"]

LABELS: tuple[str, ...] = ("sinus", "sinus_bradycardia", "sinus_tachycardia", "af", "afl", "svt", "vt", "vf",
                           "asystole", "pause", "av_block", "paced", "unreadable", "other")

# Rates and durations (physiological definitions)
BRADY_BPM, TACHY_BPM = 60.0, 100.0
SVT_BPM = 150.0            # sustained regular narrow-complex rate above this: SVT rather than sinus tachycardia
VT_MIN_BEATS = 3           # a VT run: >= 3 consecutive ventricular beats ...
VT_RATE_BPM = 100.0        # ... above 100 /min
SUSTAINED_S = 30.0
PAUSE_S = 2.0              # RR or beat-free gap from which a pause is labelled
ASYSTOLE_S = 4.0           # no QRS for this long: asystole (monitoring definition)
LOCAL_BEATS = 9            # local rate: median RR over this many intervals
MIN_RATE_RUN = 10          # shorter runs of a sinus-rate label join the rate label before them
_RATE_LABELS = frozenset({"sinus", "sinus_bradycardia", "sinus_tachycardia"})
PREMATURE = 0.80           # SVT run beat: RR below this fraction of the local RR
# Ventricular runs
VENTRICULAR_SHAPE = 0.5    # "N" beats correlating below this with the conducted QRS count as ventricular
RUN_CYCLE = 0.15           # an "N" inside a V run keeping the run's cycle within this fraction joins it
RUN_ALIKE = 0.8            # ... and one next to a run joins it when it repeats the run's complex this closely
RUN_GAP = 4.0              # an interval this many times a run's median interval splits it (noise, missed beats)
CONDUCTED_SHAPE = 0.85     # correlation with the conducted QRS from which a beat looks conducted (beats.DIFF_CORR)
# AF (chosen on MIT-BIH DS1)
AF_WINDOW = 32             # RR intervals per irregularity window
AF_IRREGULARITY = 0.10     # median |dRR| / median RR above this: AF ...
AF_P_CONSISTENCY = 0.30    # ... unless the pre-QRS segments repeat (a P wave): consistency above this
AF_SMOOTH = 15             # beats of majority vote on the per-beat decision
AF_MIN_S = 30.0            # shortest AF episode reported (the clinical definition of an AF episode)
P_WINDOW_S = (0.30, 0.08)  # pre-QRS segment holding the P wave (before the R fiducial)
AFL_MIN_S = 30.0           # shortest flutter episode reported (as for AF)
#: Per-beat atrial findings (:func:`atrial_consistency`), stitched per beat like the other beat fields.
ATRIAL_DTYPE = np.dtype([(name, np.float64) for name in ("consistency", "flutter_bpm", "pr_s", "blocked_p", "late_p_s",
                                                          "foreign", "free_p", "free_pr_s", "free_pp_s")])
# AV block (from P waves found independently of the QRS: telediag.ecg.atrial)
P_MIN_FS = 100.0           # P waves are looked for at this sampling rate or above
AV3_BEATS = 5              # third degree: this many consecutive N beats ...
AV3_MAX_BPM = 60.0         # ... a ventricular (escape) rhythm at most this fast ...
AV3_RR_SPREAD = 0.12       # ... and regular (every RR within this share of their median) ...
AV3_RATIO = 1.25           # ... regular P waves at least this many times faster ...
AV3_P_FOUND = 0.7          # ... found for this share of the atrial cycles ...
AV3_PR_SPREAD_S = 0.20     # ... with PR intervals spread over this range or more ...
AV3_PR_FIXED = 0.5         # ... and fewer than this share of them within PR_SAME_S of their median
PR_SAME_S = 0.04
AV2_PR_S = (0.10, 0.45)    # second degree: both beats around a dropped one conducted (a PR in this range) ...
AV2_MIDWAY = 0.12          # ... the non-conducted P wave midway between their P waves (within this share) ...
AV2_MIN_DROPS = 2          # ... and at least this many dropped beats ...
AV2_PR_REPEAT_S = 0.06     # ... whose PR after the drop repeats within this (and before it within twice this) ...
AV2_LOCKED = 2             # ... unless this many conducted neighbours show the same wave (locked to the QRS)
AV2_NEIGHBOURS = 4         # ... among this many either side
AV2_WITHIN_S = 30.0        # ... each within this of the next
AV2_PAUSE = 1.4            # a dropped beat among conducted ones: its RR this many times theirs at least
AV2_TWO_ONE = 0.8          # "2:1" when this share of the beats end an interval holding a non-conducted P wave,
AV2_TWO_ONE_MIN = 4        # ... at least this many, each P wave at least this long after the T wave's end
AV2_CLEAR_S = 0.10
# VF
LOW_FS = 50.0              # rate the 1-20 Hz band (P/f waves, VF spectra) is analysed at
VF_BAND_HZ = (1.0, 20.0)
VF_DOMINANT_HZ = (2.5, 9.0)
VF_CONCENTRATION = 0.55    # power within +-1 Hz of the dominant peak / 1-20 Hz power
VF_LOW_FRACTION = 0.30     # share of samples within 10 % of the window peak: below = no isoelectric line
SINE_DOMINANT_HZ = (VT_RATE_BPM / 60.0, VF_DOMINANT_HZ[0])   # sine-wave VT: 100-150 /min ...
SINE_HALF_HZ = 0.5         # ... its power judged within this of the peak
# Pulse
PULSE_BAND_HZ = (0.5, 8.0)
PULSE_MIN_RR_S = 0.27      # 220 /min
PULSE_PROMINENCE = 0.35    # of the channel's recent pulse amplitude
PULSE_MAX_GAP_S = 2.5      # a pulse present: no inter-pulse gap longer than this (24 /min) ...
PULSE_MAX_CV = 0.35        # ... and intervals this regular (noise "pulses" are erratic)
PULSE_FLAT = 0.5           # share of exactly repeated samples above which a pulse block is a staircase
PULSE_REFUTE_FRACTION = 0.6  # a gap is refuted when the pulse period is below this share of it
PULSE_BEFORE_S = 10.0      # pulse rhythm before a ventricular run: its reference interval ...
PULSE_STEADY = 0.15        # ... which every pulse interval through the run keeps within this fraction
PULSE_LAG_S = 0.5          # a pulse arrives up to this long after its QRS (pulse transit time)
# Noise and missed beats
DISORGANISED = 0.3         # envelope 20th percentile / maximum above this: noise, not a rhythm ...
NOISE_RR_CV = 0.15         # ... unless the detections there are regular (median |dRR| / RR below this)
PACED_WINDOW_S = 0.35      # a pacing spike this long before a beat paces it
PACED_SHARE = 0.5          # share of paced beats among the local beats for a paced background
GAP_ACTIVITY = 0.4         # QRS-band activity inside a gap above this share of a typical QRS: missed beats


@dataclass(frozen=True)
class Episode:
    """One stretch of the timeline: label, [start_s, end_s) and the evidence it rests on."""

    label: str
    start_s: float
    end_s: float
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (seconds rounded to ms)."""
        return {"label": self.label, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "evidence": dict(self.evidence)}


@dataclass(frozen=True)
class RhythmResult:
    """Rhythm timeline plus the event lists the critical-value rules read.

    ``gaps`` holds every beat-free interval >= ``PAUSE_S`` in readable signal
    (evidence: duration, whether it is a true RR); ``vt_runs`` every run of
    >= 3 ventricular beats above 100 /min (rate, duration, sustained, pulse);
    ``ventricular_runs`` every run of >= 3 ventricular beats whatever its rate
    (a superset of ``vt_runs``), so a rule set may draw its own rate line
    (monitoring confirms a VT alarm with a margin below 100 /min), plus the
    VF/VFL and sine-wave stretches (evidence ``waveform: oscillatory``, rate
    from the spectral peak, or 150 /min, the VF band's floor) and the runs
    counted on a pulse channel where the ECG missed beats (evidence
    ``beats_from: pulse``, see :func:`_pulse_counted_runs`);
    ``vf`` the VF/VFL episodes. Gaps, VF episodes and ventricular runs that a
    pulsatile channel or the QRS-activity check refuted are not in them but in
    ``refuted``, with the evidence (rules also skip rate windows that overlap
    them).
    ``unreadable`` includes the noise blocks, so it can exceed the quality
    stage's unreadable windows.
    """

    episodes: tuple[Episode, ...]
    gaps: tuple[Episode, ...]
    vt_runs: tuple[Episode, ...]
    ventricular_runs: tuple[Episode, ...]
    vf: tuple[Episode, ...]
    refuted: tuple[Episode, ...]
    duration_s: float
    pulses: tuple[np.ndarray, ...]     # pulse-beat times (s) per pulsatile channel
    beat_times_s: np.ndarray
    beat_labels: np.ndarray
    background: np.ndarray          # per-beat background label
    unreadable: tuple[tuple[float, float], ...]

    def pulse_over(self, a: float, b: float) -> dict[str, Any] | None:
        """Regular-pulse evidence over [a, b] s (see :func:`_pulse_over`), None without one."""
        return _pulse_over(a, b, self.pulses)


# --------------------------------------------------------------------------
# Signal-level detectors
# --------------------------------------------------------------------------

def low_band(signals: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    """The 1-20 Hz band of every lead at about ``LOW_FS`` Hz, lead-major (n_leads, m), and its rate.

    VF and atrial (P/f-wave) activity live below 20 Hz, so both are analysed
    on this small signal: decimation by averaging ``step`` samples (a cheap
    anti-alias filter) before the band-pass makes the filtering and the
    windowed spectra several times cheaper than at the recording's rate.
    """
    x = np.asarray(signals, dtype=np.float64).reshape(len(signals), -1)
    step = max(int(round(fs / LOW_FS)), 1)
    m = x.shape[0] // step
    xd = np.array(x[0:m * step:step].T, order="C")          # (L, m); strided sums beat a mean over an axis
    for k in range(1, step):
        xd += x[k:m * step:step].T
    if step > 1:
        xd /= step
    np.nan_to_num(xd, copy=False)
    fs_d = fs / step
    if m < 16:
        return np.zeros((x.shape[1], m)), fs_d
    return bandpass_rows(xd, fs_d, *VF_BAND_HZ), fs_d


def oscillation_blocks(low: np.ndarray, fs_low: float, usable: np.ndarray,
                       block_s: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Per block: VF/VFL (bool), and the rate (/min) of a sine-wave ventricular rhythm (0 where none).

    ``low`` is :func:`low_band` output (n_leads, m) at ``fs_low``; ``usable``
    the (n_blocks, n_leads) mask of leads carrying signal (not flat, missing,
    clipped or out of range; "noisy" leads count, because the noise measure,
    continuous slope activity, is what VF itself looks like). Block k is
    judged on the window of blocks k and k+1 (4 s), so a stretch of >= 4 s
    marks at least one block; a block counts when every such lead of the
    window agrees.

    Why the second: a wide-complex VT at 100-150 /min can merge QRS and T
    into one sinusoid with no isoelectric line, in which QRS detection finds
    beats at random; it has the VF signature (power concentrated at one
    frequency, no baseline) one band lower, at ``SINE_DOMINANT_HZ``
    (100-150 /min, below the VF band). Its power is judged within
    ``SINE_HALF_HZ`` of the peak, the narrower spacing of that band. The
    rate is 0 where no window qualifies. Both share one set of spectra.
    """
    n_leads, m_len = low.shape
    nb = usable.shape[0]
    sub = int(round(block_s * fs_low))
    if nb < 2 or sub < 16:
        return np.zeros(nb, bool), np.zeros(nb)
    yb = np.zeros((n_leads, nb * sub))
    yb[:, :min(m_len, nb * sub)] = low[:, :nb * sub]
    yb = yb.reshape(n_leads, nb, sub)
    win = np.concatenate([yb[:, :-1], yb[:, 1:]], axis=2)                          # (L, nb-1, 2*sub)
    win = win - win.mean(axis=2, keepdims=True)
    m = 2 * sub
    nfft = 1 << int(np.ceil(np.log2(max(m, 64))))
    spec = np.abs(np.fft.rfft(win * np.hanning(m), n=nfft, axis=2)) ** 2
    f = np.fft.rfftfreq(nfft, 1.0 / fs_low)
    band = (f >= VF_BAND_HZ[0]) & (f <= VF_BAND_HZ[1])
    total = np.maximum(spec[:, :, band].sum(axis=2), 1e-12)
    cum = np.concatenate([np.zeros(spec.shape[:2] + (1,)), np.cumsum(spec, axis=2)], axis=2)
    peak_abs = np.abs(win).max(axis=2, keepdims=True)
    low_frac = (np.abs(win) < 0.1 * np.maximum(peak_abs, 1e-12)).mean(axis=2)
    shaped = (low_frac < VF_LOW_FRACTION) & (peak_abs[..., 0] > 0.1)               # no isoelectric line
    ok = (usable[:-1] & usable[1:]).T                                               # (L, nb-1)
    n_ok = ok.sum(axis=0)

    # The dominant frequency is the spectral peak over both bands, so a 2-Hz sinusoid is not
    # taken for VF by the skirt of its peak reaching into the VF band (nor VF for a sinusoid).
    dom = (f >= SINE_DOMINANT_HZ[0]) & (f <= VF_DOMINANT_HZ[1])
    peak_i = np.flatnonzero(dom)[np.argmax(spec[:, :, dom], axis=2)]              # (L, nb-1)
    fast = f[peak_i] >= VF_DOMINANT_HZ[0]

    def agree(in_band: np.ndarray, half_hz: float) -> np.ndarray:
        half = max(int(round(half_hz / (f[1] - f[0]))), 1)
        lo = np.clip(peak_i - half, 0, len(f) - 1)
        hi = np.clip(peak_i + half + 1, 0, len(f))
        around = np.take_along_axis(cum, hi[..., None], 2)[..., 0] - np.take_along_axis(cum, lo[..., None], 2)[..., 0]
        votes = ((around / total > VF_CONCENTRATION) & shaped & in_band & ok).sum(axis=0)
        out = np.zeros(nb, bool)
        out[:-1] = (votes > 0) & (votes == n_ok)
        return out

    vf = agree(fast, 1.0)
    sine = agree(~fast, SINE_HALF_HZ)
    rate = np.zeros(nb)
    rate[:-1] = 60.0 * np.median(f[peak_i], axis=0)
    return vf, np.where(sine, rate, 0.0)


def atrial_consistency(low: np.ndarray, fs_low: float, beat_samples: np.ndarray, fs: float,
                       beat_labels: Sequence[str]) -> np.ndarray:
    """Per beat, the atrial findings (a record of ``ATRIAL_DTYPE``): P-wave consistency and flutter rate.

    ``consistency``: how consistent the pre-QRS (P-wave) segment is across the
    neighbouring N beats (below). ``flutter_bpm``: the atrial flutter rate
    around the beat, 0 where none (:func:`telediag.ecg.atrial.flutter_rate`).
    Both come from the same 1-20 Hz band and are stitched per beat, so the
    signal stage carries them as one per-beat field.

    Why: RR irregularity alone cannot tell AF from sinus rhythm with
    irregular conduction (e.g. second-degree AV block, frequent atrial
    ectopy). In sinus rhythm each QRS is preceded by the same P wave, so the
    average of the segments 300-80 ms before the QRS of ``AF_WINDOW // 2``
    neighbouring N beats keeps most of their energy; in AF the fibrillatory
    waves are unrelated to the QRS and average out. Value = energy of the
    average / mean energy of the segments (about 1/k for random activity,
    near 1 for a repeated P wave); NaN where too few N beats are near.
    """
    qrs = np.asarray(beat_samples, dtype=np.int64)
    labels = np.asarray(list(beat_labels), dtype=object)
    found = np.zeros(qrs.size, ATRIAL_DTYPE)
    found["consistency"] = _p_consistency(low, fs_low, qrs, fs, labels)
    found["flutter_bpm"] = flutter_rate(low, fs_low, qrs, fs, labels)
    if fs >= P_MIN_FS:
        for k, v in p_wave_findings(low, fs_low, qrs, fs, labels, found["consistency"]).items():
            found[k] = v
    else:
        for k in P_FIELDS:
            found[k] = np.nan
    return found


def _p_consistency(low: np.ndarray, fs_low: float, qrs: np.ndarray, fs: float, labels: np.ndarray) -> np.ndarray:
    """Per beat: the P-wave consistency of :func:`atrial_consistency`; NaN where too few N beats are near."""
    out = np.full(qrs.size, np.nan)
    n_leads, m_len = low.shape
    a_off, b_off = int(round(P_WINDOW_S[0] * fs_low)), int(round(P_WINDOW_S[1] * fs_low))
    centre = np.round(qrs / fs * fs_low).astype(np.int64)
    ok = (labels == "N") & (centre - a_off >= 0) & (centre < m_len)
    idx = np.flatnonzero(ok)
    k = AF_WINDOW // 2
    if idx.size < k:
        return out
    seg = low[:, np.clip(centre[idx, None] + np.arange(-a_off, -b_off)[None, :], 0, m_len - 1)]   # (L, B, w)
    seg = seg - seg.mean(axis=2, keepdims=True)
    energy = (seg ** 2).sum(axis=(0, 2))                                                       # (B,)
    csum = np.concatenate([np.zeros((n_leads, 1, seg.shape[2])), np.cumsum(seg, axis=1)], axis=1)
    e_sum = np.concatenate([[0.0], np.cumsum(energy)])
    lo = np.clip(np.arange(idx.size) - k // 2, 0, idx.size - k)
    hi = lo + k
    mean_seg = (csum[:, hi] - csum[:, lo]) / k                                                 # (L, B, w)
    mean_energy = (e_sum[hi] - e_sum[lo]) / k
    out[idx] = (mean_seg ** 2).sum(axis=(0, 2)) / np.maximum(mean_energy, 1e-12)
    return out


def pulse_beats(x: np.ndarray, fs: float) -> np.ndarray:
    """Pulse-beat peak times (s) in one pulsatile channel (ABP or pleth, any units).

    Peaks of the 0.5-8 Hz band must stand out by a fraction of the channel's
    own recent pulse amplitude (a rolling median over 20 s of per-2-s ranges),
    so a sensor that goes flat or falls off after good signal yields no
    beats rather than noise peaks. NaN (missing) samples give no beats.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < int(4 * fs):
        return np.zeros(0)
    bad = ~np.isfinite(x)
    y = bandpass_rows(np.where(bad, np.nanmedian(x) if (~bad).any() else 0.0, x)[None, :], fs,
                      *PULSE_BAND_HZ)[0]
    y[bad] = 0.0
    block = int(2 * fs)
    nb = len(y) // block
    if nb < 2:
        return np.zeros(0)
    yb = y[:nb * block].reshape(nb, block)
    ranges = np.percentile(yb, 95, axis=1) - np.percentile(yb, 5, axis=1)
    scale = ndimage.median_filter(ranges, size=min(11, nb), mode="nearest")
    level = np.repeat(np.maximum(scale, 1e-9), block)
    level = np.concatenate([level, np.full(len(y) - level.size, level[-1])])
    peaks, props = signal.find_peaks(y, distance=max(int(PULSE_MIN_RR_S * fs), 1), prominence=0.0)
    keep = props["prominences"] >= PULSE_PROMINENCE * level[peaks]
    # A saturated or coarsely quantised sensor (a staircase) is no pulse evidence: in such
    # blocks most raw samples repeat their predecessor exactly.
    raw = np.where(bad, 0.0, x)
    flat = np.zeros(nb + 1)
    same = np.concatenate([[False], np.diff(raw) == 0])
    flat[:nb] = same[:nb * block].reshape(nb, block).mean(axis=1)
    flat[nb] = flat[nb - 1]
    keep &= ~bad[peaks] & (flat[np.minimum(peaks // block, nb)] < PULSE_FLAT)
    return peaks[keep] / fs


def qrs_activity(bandpassed: np.ndarray, beat_samples: np.ndarray, fs: float, usable: np.ndarray,
                 block_s: float = 2.0) -> np.ndarray:
    """Per ``block_s`` block: QRS-band activity relative to a typical detected QRS (max over usable leads).

    A second opinion on beat-free gaps that does not depend on the detector's
    adaptive thresholds: each lead's largest |QRS-band| value in the block over
    the median of that lead's values at detected beats. A real pause holds only
    P/T-wave energy (well below 0.4 of a QRS); a gap full of QRS-sized activity
    is a detector miss (e.g. after an artefact), never asystole.
    ``bandpassed`` is (n, n_leads), as :class:`telediag.ecg.qrs.QRSResult` holds it.
    """
    bp = np.asarray(bandpassed, dtype=np.float64).reshape(len(bandpassed), -1).T    # lead-major (a view)
    qrs = np.asarray(beat_samples, dtype=np.int64)
    n_leads, n = bp.shape
    block = max(int(round(block_s * fs)), 1)
    nb = usable.shape[0]
    full = min(n // block, nb)
    blk = np.zeros((n_leads, nb))
    if full:
        body = bp[:, :full * block].reshape(n_leads, full, block)
        blk[:, :full] = np.maximum(body.max(axis=2), -body.min(axis=2))
    if full < nb and full * block < n:
        blk[:, full] = np.abs(bp[:, full * block:]).max(axis=1)
    if qrs.size == 0:
        return np.where(usable, np.inf, 0.0).max(axis=1)
    half = max(int(round(0.05 * fs)), 1)
    idx = np.clip(qrs[:, None] + np.arange(-half, half + 1)[None, :], 0, n - 1)
    typical = np.median(np.abs(bp[:, idx]).max(axis=2), axis=1)                      # (L,)
    rel = blk.T / np.maximum(typical, 1e-12)
    return np.where(usable, rel, 0.0).max(axis=1)


def shape_correlation(bandpassed: np.ndarray, beat_samples: np.ndarray, beat_labels: Sequence[str], fs: float,
                      usable: np.ndarray, block_s: float = 2.0) -> np.ndarray:
    """Per beat: correlation of its QRS (+-60 ms of the QRS band, usable leads) with the median "N" QRS.

    Why: the beat classifier compares each beat with the dominant beat of its
    own minute, so inside a sustained or frequent ventricular rhythm the
    ectopic shape becomes "dominant" and its beats come out "N". Against the
    median conducted beat of the whole stretch (a chunk of up to an hour), a
    ventricular beat keeps its low correlation. NaN where no lead is usable.
    """
    qrs = np.asarray(beat_samples, dtype=np.int64)
    labels = np.asarray(list(beat_labels), dtype=object)
    out = np.full(qrs.size, np.nan)
    normal = labels == "N"
    if normal.sum() < 5:
        return out
    seg, leads = _qrs_segments(bandpassed, qrs, fs, usable, block_s)
    template = np.median(seg[:, normal], axis=1)                       # (L, W)
    ab = (np.einsum("lbw,lw->lb", seg, template) * leads).sum(axis=0)
    aa = (np.einsum("lbw,lbw->lb", seg, seg) * leads).sum(axis=0)
    bb = ((template * template).sum(axis=1)[:, None] * leads).sum(axis=0)
    den = np.sqrt(aa * bb)
    ok = den > 0
    out[ok] = ab[ok] / den[ok]
    return out


def _qrs_segments(bandpassed: np.ndarray, qrs: np.ndarray, fs: float, usable: np.ndarray,
                  block_s: float) -> tuple[np.ndarray, np.ndarray]:
    """QRS-band segments (+-60 ms, mean removed) per lead and beat (L, B, W), and the usable-lead
    weights of each beat (L, B)."""
    bp = np.asarray(bandpassed, dtype=np.float64).reshape(len(bandpassed), -1).T      # lead-major (a view)
    half = max(int(round(0.06 * fs)), 2)
    idx = np.clip(qrs[:, None] + np.arange(-half, half + 1)[None, :], 0, bp.shape[1] - 1)
    seg = bp[:, idx]                                                   # (L, B, W)
    seg -= seg.mean(axis=2, keepdims=True)
    block = max(int(round(block_s * fs)), 1)
    leads = usable[np.clip(qrs // block, 0, usable.shape[0] - 1)].T.astype(np.float64)   # (L, B)
    return seg, leads


def successive_correlation(bandpassed: np.ndarray, beat_samples: np.ndarray, fs: float,
                           usable: np.ndarray, block_s: float = 2.0) -> np.ndarray:
    """Per beat: correlation of its QRS with the preceding beat's (usable leads; NaN for the first).

    Why: a ventricular run is a train of alike complexes unlike the conducted
    beat. The beat classifier and :func:`shape_correlation` each judge one
    beat against a reference, so the first and last complexes of a run (often
    fusion beats, or judged against a template that has half adopted the
    ectopic shape) come out "N" and cut a run of five into one of three. A
    beat that repeats the complex next to it more closely than it resembles
    the conducted QRS belongs to that run (see :func:`_ventricular_runs`).
    """
    qrs = np.asarray(beat_samples, dtype=np.int64)
    out = np.full(qrs.size, np.nan)
    if qrs.size < 2:
        return out
    seg, leads = _qrs_segments(bandpassed, qrs, fs, usable, block_s)
    both = leads[:, 1:] * leads[:, :-1]
    ab = (np.einsum("lbw,lbw->lb", seg[:, 1:], seg[:, :-1]) * both).sum(axis=0)
    aa = (np.einsum("lbw,lbw->lb", seg[:, 1:], seg[:, 1:]) * both).sum(axis=0)
    bb = (np.einsum("lbw,lbw->lb", seg[:, :-1], seg[:, :-1]) * both).sum(axis=0)
    den = np.sqrt(aa * bb)
    ok = den > 0
    out[1:][ok] = ab[ok] / den[ok]
    return out


def paced_beats(spikes: np.ndarray, beat_samples: np.ndarray, fs: float) -> np.ndarray:
    """Per beat: a pacemaker spike (sample indices, e.g. from
    :func:`telediag.ecg.measure.remove_pacing_spikes`) lies within ``PACED_WINDOW_S`` before it
    (a ventricular stimulus just before the QRS, an atrial one a PR interval before)."""
    qrs = np.asarray(beat_samples, dtype=np.int64)
    sp = np.sort(np.asarray(spikes, dtype=np.int64))
    if sp.size == 0 or qrs.size == 0:
        return np.zeros(qrs.size, bool)
    k = np.searchsorted(sp, qrs, side="right") - 1          # last spike at or before each beat
    before = np.where(k >= 0, qrs - sp[np.maximum(k, 0)], np.iinfo(np.int64).max)
    return (k >= 0) & (before <= PACED_WINDOW_S * fs)


def disorganised_blocks(envelope: np.ndarray, fs: float, n_blocks: int, block_s: float = 2.0) -> np.ndarray:
    """Per block: True where the QRS-band envelope never returns to a floor between peaks.

    Why: signal quality judges each lead against its own typical QRS, so a
    lead carrying only noise (electrodes on a moving patient, a disconnected
    cable picking up EMG) looks "usable" and the detector finds "beats" in
    it. An ECG, even at 200 /min, has a quiet stretch between QRS complexes;
    noise has none: the 20th percentile of the envelope stays above
    ``DISORGANISED`` of its maximum (MIT-BIH DS1: 0 blocks of real rhythm
    above 0.3 outside ventricular flutter, which :func:`oscillation_blocks` catches
    separately). Such blocks are treated as unreadable, never as a rhythm.
    """
    env = np.asarray(envelope, dtype=np.float64)
    block = max(int(round(block_s * fs)), 1)
    out = np.zeros(n_blocks, bool)
    nb = min(env.size // block, n_blocks)
    if nb == 0:
        return out
    e = env[:nb * block].reshape(nb, block)
    peak = e.max(axis=1)
    e = e[:, ::max(int(fs // 60), 1)]        # the envelope is smooth (100-ms integrator): ~60 Hz suffices
    # against the block's peak, but never below the record's typical block peak, so that a
    # QRS-free block (a pause: only low-level noise) is not taken for noise
    level = np.maximum(peak, np.median(peak))
    out[:nb] = np.percentile(e, 20, axis=1) > DISORGANISED * np.maximum(level, 1e-12)
    return out


def _pulse_over(a: float, b: float, pulses: Sequence[np.ndarray]) -> dict[str, Any] | None:
    """Pulse evidence over [a, b] s: present (regular pulse, no gap > 2.5 s) with its rate, or None
    when no channel shows a pulse there (absent or unknown: never used to refute)."""
    best: dict[str, Any] | None = None
    for times in pulses:
        inside = times[(times >= a - 1.0) & (times <= b + 1.0)]
        if inside.size < 2:
            continue
        edges = np.concatenate([[a], inside, [b]])
        if np.diff(edges).max() > PULSE_MAX_GAP_S:
            continue
        ibi = np.diff(inside)
        if ibi.size >= 3 and ibi.std() > PULSE_MAX_CV * ibi.mean():
            continue
        rate = 60.0 / float(np.median(ibi))
        if best is None or inside.size > best["pulses"]:
            best = {"pulses": int(inside.size), "pulse_rate_bpm": round(rate, 1)}
    return best


def _pulse_unperturbed(a: float, b: float, rate_bpm: float, pulses: Sequence[np.ndarray]) -> dict[str, Any] | None:
    """Evidence that the heart's mechanical rhythm did not change over a claimed ventricular run [a, b] s.

    Why: a run of ventricular beats replaces the conducted beats, so the
    pulse it produces changes: faster (a pulse per VT beat), or weaker and
    missing beats (pulse deficit), or irregular. A pulse channel whose every
    interval through the run (from the last pulse before it to the first
    after its last complex at ``b``) stays within ``PULSE_STEADY`` of the
    median interval of the ``PULSE_BEFORE_S`` before it (neither premature
    nor a pause, the timing bounds of an ectopic beat), at a rate clearly
    below the claimed run's, proves the ECG "run" is artefact (a moving
    patient, a lead reconnected), not a rhythm the ventricles followed. None
    when no channel shows that (no pulse, an irregular one, or one that
    changed).
    """
    for times in pulses:
        before = times[(times >= a - PULSE_BEFORE_S) & (times < a)]
        during = times[(times >= a) & (times <= b + 1.0)]
        if before.size < 4 or during.size < 2:
            continue
        ref = float(np.median(np.diff(before)))
        ibi = np.diff(np.concatenate([before[-1:], during]))
        if ref <= 0 or np.abs(ibi / ref - 1.0).max() > PULSE_STEADY or b - during[-1] > (1.0 + PULSE_STEADY) * ref:
            continue
        pulse_rate = 60.0 / ref
        if rate_bpm > (1.0 + PULSE_STEADY) * pulse_rate:
            return {"pulse_rate_bpm": round(pulse_rate, 1), "pulses": int(during.size)}
    return None


# --------------------------------------------------------------------------
# Beat-level rhythm
# --------------------------------------------------------------------------

def _af_irregularity(rr: np.ndarray, n_ok: np.ndarray) -> np.ndarray:
    """Per beat: median |dRR| / median RR over a centred window of ``AF_WINDOW`` intervals.

    ``rr[i]`` is the interval ending at beat i+1; ``n_ok[i]`` says both its
    beats are N. Beats whose window holds fewer than a quarter of usable
    successive differences get NaN (undecided).
    """
    nbeats = rr.size + 1
    out = np.full(nbeats, np.nan)
    if rr.size < 4:
        return out
    drr = np.abs(np.diff(rr))
    d_ok = n_ok[1:] & n_ok[:-1]
    half = AF_WINDOW // 2
    # Windows as index ranges; the per-window medians are computed on a padded 2-D view.
    centres = np.arange(nbeats)
    lo = np.clip(centres - half, 0, max(drr.size - 1, 0))
    width = min(AF_WINDOW, drr.size)
    lo = np.minimum(lo, drr.size - width)
    idx = lo[:, None] + np.arange(width)[None, :]
    dd = np.where(d_ok[idx], drr[idx], np.inf)
    rw = np.where(n_ok[idx], rr[idx], np.inf)
    enough = np.isfinite(dd).sum(axis=1) >= max(width // 4, 3)
    out[enough] = _median_finite(dd[enough]) / _median_finite(rw[enough])
    return out


def _median_finite(a: np.ndarray) -> np.ndarray:
    """Row medians over the finite entries of ``a`` (missing ones are +inf); every row needs one.

    Sorting pushes the +inf to the end, so the median of the c finite values sits at
    (c - 1) // 2 and c // 2: much faster than ``nanmedian`` on many short rows.
    """
    srt = np.sort(a, axis=1)
    c = np.isfinite(srt).sum(axis=1)
    rows = np.arange(a.shape[0])
    return 0.5 * (srt[rows, (c - 1) // 2] + srt[rows, c // 2])


def _fill_nearest(values: np.ndarray, limit: int) -> np.ndarray:
    """NaNs replaced by the nearest finite value at most ``limit`` positions away (beats whose own
    window had too few N-N intervals, e.g. amid ventricular ectopy, take their neighbours' AF decision)."""
    ok = np.isfinite(values)
    if ok.all() or not ok.any():
        return values
    pos = np.arange(values.size)
    idx = np.flatnonzero(ok)
    right = np.clip(np.searchsorted(idx, pos), 0, idx.size - 1)
    left = np.clip(right - 1, 0, idx.size - 1)
    nearest = np.where(np.abs(idx[left] - pos) <= np.abs(idx[right] - pos), idx[left], idx[right])
    out = values.copy()
    fill = ~ok & (np.abs(nearest - pos) <= limit)
    out[fill] = values[nearest[fill]]
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the True runs of a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _interval_unreadable(a: float, b: float, unreadable: Sequence[tuple[float, float]]) -> bool:
    return any(u0 < b and u1 > a for u0, u1 in unreadable)


def detect_rhythm(beat_samples: np.ndarray, beat_labels: Sequence[str], fs: float, n_samples: int,
                  unreadable_blocks: np.ndarray, block_s: float, vf: np.ndarray | None = None,
                  pulses: Sequence[np.ndarray] = (), activity: np.ndarray | None = None,
                  atrial: np.ndarray | None = None, disorganised: np.ndarray | None = None,
                  shape: np.ndarray | None = None, paced: np.ndarray | None = None,
                  alike: np.ndarray | None = None, sine: np.ndarray | None = None) -> RhythmResult:
    """Rhythm timeline from beats (samples, N/V/Q labels), quality and the signal-level detectors.

    Args:
        beat_samples: QRS fiducials (samples from record start), increasing.
        beat_labels: "N"/"V"/"Q" per beat (:func:`telediag.ecg.beats.classify_beats`).
        fs, n_samples: sampling rate and record length.
        unreadable_blocks: bool per ``block_s`` block, no lead usable.
        vf: bool per block from :func:`oscillation_blocks` (None: no VF detection).
        pulses: pulse-beat times (s), one array per pulsatile channel (:func:`pulse_beats`).
        activity: optional per-block QRS-band activity (:func:`qrs_activity`);
            a gap whose inner blocks hold QRS-sized activity is a detector miss.
        atrial: optional per-beat atrial findings (:func:`atrial_consistency`, ``ATRIAL_DTYPE``):
            irregular rhythm with a repeated P wave is not AF; flutter waves make ``afl``.
        disorganised: optional per-block noise flag (:func:`disorganised_blocks`);
            such blocks count as unreadable unless VF-like.
        shape: optional per-beat correlation with the conducted QRS (:func:`shape_correlation`);
            a beat shaped unlike it (below ``VENTRICULAR_SHAPE``) may extend a ventricular run.
        paced: optional per-beat pacing flag (:func:`paced_beats`): paced beats make a ``paced``
            background and never count as ventricular ectopy.
        alike: optional per-beat correlation with the preceding beat (:func:`successive_correlation`);
            with ``shape``, grows ventricular runs by the complexes at their ends that repeat them.
        sine: optional per-block rate of a sine-wave ventricular rhythm (:func:`oscillation_blocks`,
            0 where none): such spans are ventricular runs, never unreadable.
    """
    qrs = np.asarray(beat_samples, dtype=np.int64)
    labels = np.asarray(list(beat_labels), dtype=object)
    duration = n_samples / fs
    t = qrs / fs
    unread_b = np.asarray(unreadable_blocks, bool).copy()
    sine_rate = np.zeros(unread_b.size)
    if sine is not None:
        given = np.asarray(sine, np.float64)[:unread_b.size]
        sine_rate[:given.size] = given
    osc = sine_rate > 0
    if vf is not None:
        v = np.asarray(vf, bool)[:osc.size]
        osc[:v.size] |= v
    # VF/VFL and sine-wave VT are judged on every lead that carries signal, "noisy" ones too
    # (continuous activity without an isoelectric line is what they look like to the noise
    # measure): their blocks, each a 4-s window of blocks k and k+1, are never unreadable.
    unread_b[osc] = False
    unread_b[1:][osc[:-1]] = False
    if disorganised is not None:
        unread_b |= _noise_blocks(np.asarray(disorganised, bool)[:unread_b.size], t, block_s, osc)
    unreadable = [(a * block_s, min(b * block_s, duration)) for a, b in _runs(unread_b)]
    refuted: list[Episode] = []

    # ---- VF episodes (signal level), refuted by a regular pulse
    vf_eps: list[Episode] = []
    oscillatory: list[tuple[float, float, float]] = []      # VF-like and sine-wave spans: start, end, rate
    if vf is not None:
        vf_mask = np.asarray(vf, bool) & ~unread_b[:len(vf)]
        for a, b in _runs(vf_mask):
            s0, s1 = a * block_s, min((b + 1) * block_s, duration)   # block k covers the window [k, k+2)
            oscillatory.append((s0, s1, 60.0 * VF_DOMINANT_HZ[0]))
            pulse = _pulse_over(s0, s1, pulses)
            ev = {"duration_s": round(s1 - s0, 2), "blocks": b - a}
            if pulse is not None:
                refuted.append(Episode("vf", s0, s1, {**ev, **pulse, "refuted_by": "pulse"}))
                continue
            if pulses:
                ev["pulse"] = "not found"
            vf_eps.append(Episode("vf", s0, s1, ev))
    for a, b in _runs((sine_rate > 0) & ~unread_b):
        oscillatory.append((a * block_s, min((b + 1) * block_s, duration), float(np.median(sine_rate[a:b]))))
    readable_beat = ~unread_b[np.clip((qrs / (block_s * fs)).astype(np.int64), 0, max(unread_b.size - 1, 0))] \
        if qrs.size and unread_b.size else np.ones(qrs.size, bool)
    is_v = (labels == "V") & readable_beat
    is_n = (labels == "N") & readable_beat

    # ---- gaps: pauses and asystole (readable signal only), refuted by a regular pulse
    gaps: list[Episode] = []
    bounds = np.concatenate([[0.0], t, [duration]])
    rr_all = np.diff(bounds)
    for k in np.flatnonzero(rr_all >= PAUSE_S):
        a, b = float(bounds[k]), float(bounds[k + 1])
        if _interval_unreadable(a, b, unreadable) or any(e.start_s < b and e.end_s > a for e in vf_eps):
            continue
        edge = k == 0 or k == rr_all.size - 1            # record start/end: a beat-free stretch, not an RR
        ev = {"duration_s": round(b - a, 3), "rr": not edge}
        label = "asystole" if b - a >= ASYSTOLE_S else "pause"
        if activity is not None:
            inner = activity[int(np.ceil((a + 0.3) / block_s)):int((b - 0.3) // block_s)]
            if inner.size and float(inner.max()) > GAP_ACTIVITY:
                refuted.append(Episode(label, a, b, {**ev, "qrs_activity": round(float(inner.max()), 2),
                                                     "refuted_by": "qrs_activity"}))
                continue
        pulse = _pulse_over(a, b, pulses)
        # A pulse refutes the gap only when it beats clearly faster than the gap allows
        # (a slow but real rhythm has a slow pulse too).
        if pulse is not None and 60.0 / pulse["pulse_rate_bpm"] < PULSE_REFUTE_FRACTION * (b - a):
            refuted.append(Episode(label, a, b, {**ev, **pulse, "refuted_by": "pulse"}))
            continue
        if pulses:
            ev["pulse"] = "present" if pulse is not None else "not found"    # "not found" confirms
        gaps.append(Episode(label, a, b, ev))

    # ---- background rhythm per beat
    rr = np.diff(t)
    nb = qrs.size
    background = np.full(nb, "other", dtype=object)
    if nb >= 2:
        n_ok = is_n[1:] & is_n[:-1]
        irr = _fill_nearest(_af_irregularity(rr, n_ok), AF_WINDOW // 4)
        af = np.nan_to_num(irr, nan=0.0) > AF_IRREGULARITY
        if atrial is not None:
            af &= ~(np.nan_to_num(atrial["consistency"], nan=0.0) > AF_P_CONSISTENCY)
        decided = np.isfinite(irr)
        if nb >= AF_SMOOTH:
            votes = ndimage.uniform_filter1d(af.astype(np.float64), AF_SMOOTH, mode="nearest")
            af = votes > 0.5
        local_rr = ndimage.median_filter(np.concatenate([rr[:1], rr]), size=LOCAL_BEATS, mode="nearest")
        rate = 60.0 / np.maximum(local_rr, 1e-3)
        ventricular = ndimage.uniform_filter1d(is_v.astype(np.float64), LOCAL_BEATS, mode="nearest") > 0.5
        background[:] = np.where(rate < BRADY_BPM, "sinus_bradycardia",
                                 np.where(rate > SVT_BPM, "svt",
                                          np.where(rate > TACHY_BPM, "sinus_tachycardia", "sinus")))
        background[ventricular] = "other"
        # AF is decided on the N-N intervals around a beat, so ventricular ectopy inside AF
        # (even frequent) leaves the underlying rhythm AF
        background[af & decided] = "af"
        if atrial is not None:
            _label_flutter(background, atrial["flutter_bpm"] > 0, t)
        if paced is not None:
            share = ndimage.uniform_filter1d(np.asarray(paced, np.float64), LOCAL_BEATS, mode="nearest")
            background[share > PACED_SHARE] = "paced"
        background[~readable_beat] = "other"
        # AF shorter than AF_MIN_S is not an AF episode: give it the rate label
        for a, b in _runs(background == "af"):
            if t[min(b, nb - 1)] - t[a] < AF_MIN_S:
                background[a:b] = np.where(rate[a:b] < BRADY_BPM, "sinus_bradycardia",
                                           np.where(rate[a:b] > TACHY_BPM, "sinus_tachycardia", "sinus"))
        _absorb_short_rate_runs(background)

    # ---- VT runs: >= 3 consecutive ventricular beats above 100 /min
    v_like = is_v.copy()
    if shape is not None:
        v_like |= is_n & (np.nan_to_num(np.asarray(shape, dtype=np.float64), nan=1.0) < VENTRICULAR_SHAPE)
    if paced is not None:
        v_like &= ~np.asarray(paced, bool)          # a paced QRS is wide by design, not ectopic
    # Runs inside a VF/VFL episode are kept: a fast monomorphic VT and ventricular flutter are one
    # continuum, and the timeline shows VF there by precedence.
    ventricular: list[Episode] = []
    irregular_bg = (background == "af") | (background == "afl")      # no pace to keep, Ashman beats
    for a, b in _split_at_gaps(_runs(_ventricular_runs(v_like, is_n & ~v_like, rr, shape, alike, irregular_bg)), rr):
        if b - a < VT_MIN_BEATS:
            continue
        span = t[b - 1] - t[a]
        rate_v = 60.0 * (b - a - 1) / span if span > 0 else 0.0
        end = t[b - 1] + (float(np.median(rr[a:b - 1])) if b - a > 1 else 0.0)
        ev = {"beats": b - a, "rate_bpm": round(rate_v, 1), "duration_s": round(span, 3),
              "sustained": bool(span >= SUSTAINED_S)}
        if pulses:
            # A pulse does not refute VT (VT with a pulse is common) unless it went on unchanged,
            # slower than the run, through it; else its presence or absence is recorded.
            steady = _pulse_unperturbed(float(t[a]), float(t[b - 1]), rate_v, pulses)
            if steady is not None:
                refuted.append(Episode("vt", float(t[a]), float(end), {**ev, **steady, "refuted_by": "pulse"}))
                continue
            pulse = _pulse_over(float(t[a]), float(end), pulses)
            ev["pulse"] = "present" if pulse is not None else "not found"
        ventricular.append(Episode("vt", float(t[a]), float(end), ev))
    # A flutter/fibrillation or sine-wave waveform is a ventricular tachyarrhythmia whatever a
    # pulse says (ventricular flutter is VT at its fast end, and a pulse there is VT with a
    # pulse): its oscillations, at >= 100 /min by the detectors' bands (a VF span counts at its
    # band's floor, 150 /min), meet the VT definition, and QRS detection, which finds no
    # discrete complexes in it, cannot make the run itself.
    for s0, s1, rate_o in oscillatory:
        ev = {"beats": int((s1 - s0) * rate_o / 60.0), "rate_bpm": round(rate_o, 1), "duration_s": round(s1 - s0, 3),
              "sustained": bool(s1 - s0 >= SUSTAINED_S), "waveform": "oscillatory"}
        steady = _pulse_unperturbed(s0, s1, rate_o, pulses) if pulses else None
        if steady is None:
            ventricular.append(Episode("vt", s0, s1, ev))
    if pulses:
        ventricular += _pulse_counted_runs(t, v_like, ventricular, pulses)
    ventricular.sort(key=lambda e: e.start_s)
    vt_runs = [e for e in ventricular if e.evidence["rate_bpm"] > VT_RATE_BPM and "waveform" not in e.evidence]

    # ---- SVT runs: >= 3 consecutive premature N beats above 100 /min, or sustained > 150 /min
    svt_eps: list[Episode] = []
    if nb >= LOCAL_BEATS:
        prem = np.zeros(nb, bool)
        ref_rr = ndimage.median_filter(rr, size=2 * LOCAL_BEATS + 1, mode="nearest")
        prem[1:] = (rr < PREMATURE * ref_rr) & (60.0 / np.maximum(rr, 1e-3) > TACHY_BPM)
        cand = (prem | (background == "svt")) & is_n & ~irregular_bg
        for a, b in _runs(cand):
            if b - a < VT_MIN_BEATS:
                continue
            span = t[b - 1] - t[a]
            rate_s = 60.0 * (b - a - 1) / span if span > 0 else 0.0
            svt_eps.append(Episode("svt", float(t[a]), float(t[b - 1]),
                                   {"beats": b - a, "rate_bpm": round(rate_s, 1), "duration_s": round(span, 3)}))
        background[background == "svt"] = "sinus_tachycardia"    # sustained fast outside a run

    av_eps = _av_blocks(t, is_n & ~v_like, atrial) if atrial is not None else []
    episodes = _timeline(t, background, duration, unreadable, vf_eps, gaps, vt_runs, svt_eps, av_eps)
    if atrial is not None:
        episodes = [_with_flutter_rate(e, t, atrial["flutter_bpm"]) if e.label == "afl" else
                    _with_source(e, av_eps) if e.label == "av_block" else e for e in episodes]
    return RhythmResult(episodes=tuple(episodes), gaps=tuple(gaps), vt_runs=tuple(vt_runs),
                        ventricular_runs=tuple(ventricular), vf=tuple(vf_eps),
                        refuted=tuple(refuted), duration_s=duration, pulses=tuple(pulses), beat_times_s=t,
                        beat_labels=labels,
                        background=background, unreadable=tuple(unreadable))


def _ventricular_runs(is_v: np.ndarray, is_n: np.ndarray, rr: np.ndarray, shape: np.ndarray | None = None,
                      alike: np.ndarray | None = None, in_af: np.ndarray | None = None) -> np.ndarray:
    """Ventricular beats, with a lone "N" between two V beats counted in when it keeps the run's pace.

    Why: inside a VT run the beat classifier's template can drift towards the
    ectopic shape, so single beats of the run come out "N" and break it (seen
    in MIT-BIH 223). A conducted beat in bigeminy comes after a compensatory
    pause, so its cycle differs from the ectopic one; a misclassified VT
    beat keeps the run's cycle (both its intervals within ``RUN_CYCLE`` of
    the ventricular intervals around it), or, when it comes early (a run
    that speeds up), keeps its pace without the conducted shape (neither
    interval longer than the cycle by more than ``RUN_CYCLE``, correlation
    with the conducted QRS below ``CONDUCTED_SHAPE``): an early beat shaped
    like the conducted QRS is a capture or a false detection, not the run.

    With ``alike`` (:func:`successive_correlation`) and ``shape``
    (:func:`shape_correlation`), every run (a lone V beat too) is also grown
    at either end, one "N" beat at a time, by a beat that repeats the run's
    complex (correlation with its run neighbour >= ``RUN_ALIKE`` and above its
    correlation with the conducted QRS), at the run's cycle when it has one
    (the interval between them within ``RUN_CYCLE`` of the run's median
    interval): the first and last complexes of a VT run, and single ones
    amid it, are those the classifier most often calls "N" (fusion, template
    drift), and a run's length decides whether it is VT. A conducted beat
    after an ectopic one (bigeminy) resembles the conducted QRS, not the
    ectopic one, so it never joins. Nor does a beat in AF (``in_af``), by
    either rule: there the intervals set no pace, and aberrant conduction
    after long-short cycles (Ashman beats) repeats a wide complex without any
    ventricular run.
    """
    vent = is_v.copy()
    nb = is_v.size
    if nb < 5:
        return vent
    af = np.zeros(nb, bool) if in_af is None else np.asarray(in_af, bool)
    k = np.flatnonzero(is_n[2:-2] & ~af[2:-2] & is_v[1:-3] & is_v[3:-1]) + 2
    if k.size:
        before, after = rr[k - 1], rr[k]                   # intervals ending at / starting from beat k
        ref = np.median(np.stack([rr[k - 2], rr[k + 1]]), axis=0)   # the neighbouring V-V cycles
        on_cycle = (np.abs(before - ref) <= RUN_CYCLE * ref) & (np.abs(after - ref) <= RUN_CYCLE * ref)
        no_pause = (before <= (1.0 + RUN_CYCLE) * ref) & (after <= (1.0 + RUN_CYCLE) * ref)
        conducted_k = np.ones(k.size, bool) if shape is None else \
            np.nan_to_num(np.asarray(shape, dtype=np.float64)[k], nan=1.0) >= CONDUCTED_SHAPE
        vent[k[on_cycle | (no_pause & ~conducted_k)]] = True
    if alike is None or shape is None:
        return vent
    sim = np.nan_to_num(np.asarray(alike, dtype=np.float64), nan=0.0)
    conducted = np.nan_to_num(np.asarray(shape, dtype=np.float64), nan=1.0)

    def joins(j: int, pair: int, interval: float, cycle: float | None) -> bool:
        # beat j is next to run beat ``pair``; sim[max(j, pair)] is their correlation
        c = sim[max(j, pair)]
        on_cycle = cycle is None or abs(interval - cycle) <= RUN_CYCLE * cycle
        return bool(is_n[j] and not af[j] and c >= RUN_ALIKE and c > conducted[j] and on_cycle)

    for a, b in _runs(vent):
        cycle = float(np.median(rr[a:b - 1])) if b - a >= 2 else None
        while b < nb and not vent[b] and joins(b, b - 1, float(rr[b - 1]), cycle):
            vent[b] = True
            b += 1
        while a > 0 and not vent[a - 1] and joins(a - 1, a, float(rr[a - 1]), cycle):
            vent[a - 1] = True
            a -= 1
    return vent


def _split_at_gaps(runs: Sequence[tuple[int, int]], rr: np.ndarray) -> list[tuple[int, int]]:
    """Runs of beats split wherever an interval exceeds ``RUN_GAP`` times the run's median interval.

    Why: a run's rate is its beats over its span, so a stretch of noise or
    missed complexes inside a long ventricular run (seen in MIT-BIH 223)
    dilutes a 105 /min VT below 100 /min; the beats on either side of such a
    gap are two trains, each judged at its own rate.
    """
    out: list[tuple[int, int]] = []
    for a, b in runs:
        if b - a < 3:
            out.append((a, b))
            continue
        inner = rr[a:b - 1]                                  # intervals between the run's beats
        cuts = np.flatnonzero(inner > RUN_GAP * float(np.median(inner))) + a + 1
        edges = [a, *cuts.tolist(), b]
        out.extend((int(x), int(y)) for x, y in zip(edges[:-1], edges[1:]))
    return out


def _pulse_counted_runs(t: np.ndarray, v_like: np.ndarray, runs: Sequence[Episode],
                        pulses: Sequence[np.ndarray]) -> list[Episode]:
    """Ventricular runs whose beats the ECG detector partly missed, counted on a pulsatile channel.

    Why: wide, low-slope VT complexes that follow tall conducted beats are the
    ones QRS detection most often misses, so a run of five can come out as
    ventricular beats one or two apart. Each heartbeat that ejects is a
    pulse; where the ECG shows a cluster of ventricular beats (at least two,
    at most one other beat between neighbours, no VT run found there) and a
    pulse channel shows, over the same span, at least two pulses more than
    the ECG has beats, regular (interval spread within ``PULSE_MAX_CV``) and
    faster than ``VT_RATE_BPM``, the run is counted on the pulse. Never the
    other way: fewer pulses than beats is the pulse deficit of real VT.
    """
    out: list[Episode] = []
    idx = np.flatnonzero(v_like)
    if idx.size < 2:
        return out
    breaks = np.flatnonzero(np.diff(idx) > 2) + 1
    for cluster in np.split(idx, breaks):
        if cluster.size < 2:
            continue
        a, b = float(t[cluster[0]]), float(t[cluster[-1]])
        if any(e.start_s <= b and e.end_s >= a and e.evidence["rate_bpm"] > VT_RATE_BPM for e in runs):
            continue
        n_ecg = int(cluster[-1] - cluster[0] + 1)
        for times in pulses:
            inside = times[(times >= a) & (times <= b + PULSE_LAG_S)]
            if inside.size < max(VT_MIN_BEATS + 1, n_ecg + 2):
                continue
            ibi = np.diff(inside)
            rate = 60.0 / float(np.median(ibi))
            if rate > VT_RATE_BPM and ibi.std() <= PULSE_MAX_CV * ibi.mean():
                out.append(Episode("vt", a, b, {"beats": int(inside.size), "rate_bpm": round(rate, 1),
                                                "duration_s": round(b - a, 3), "sustained": bool(b - a >= SUSTAINED_S),
                                                "pulse": "present", "beats_from": "pulse"}))
                break
    return out


def _label_flutter(background: np.ndarray, flutter: np.ndarray, t: np.ndarray) -> None:
    """Label ``afl`` (in place) where most of the ``AF_SMOOTH`` beats around show flutter waves
    (:func:`telediag.ecg.atrial.flutter_rate`, judged only where the ventricular response is
    irregular), for at least ``AFL_MIN_S``; ventricular and VT stretches keep their label.

    Flutter takes precedence over the RR-based AF label: both have an irregular
    ventricular response, and the flutter test (a train of identical atrial waves locked
    to the QRS) is the stricter one; AF's f waves never pass it.
    """
    if flutter.size < AF_SMOOTH:
        return
    votes = ndimage.uniform_filter1d(flutter.astype(np.float64), AF_SMOOTH, mode="nearest") > 0.5
    votes &= background != "other"
    nb = t.size
    for a, b in _runs(votes):
        if t[min(b, nb - 1)] - t[a] >= AFL_MIN_S:
            background[a:b] = "afl"


def _with_flutter_rate(e: Episode, t: np.ndarray, flutter: np.ndarray) -> Episode:
    """An ``afl`` episode with the median atrial (flutter) rate of its beats in its evidence."""
    inside = flutter[(t >= e.start_s) & (t < e.end_s)]
    inside = inside[inside > 0]
    if inside.size == 0:
        return e
    return Episode(e.label, e.start_s, e.end_s, {**e.evidence, "atrial_rate_bpm": round(float(np.median(inside)), 1)})


def _av_blocks(t: np.ndarray, ok: np.ndarray, atrial: np.ndarray) -> list[Episode]:
    """Second- and third-degree AV block episodes from the P waves found independently of the QRS.

    ``ok``: the beats that are conducted-looking (N), readable and not ventricular.

    Third degree (AV dissociation): ``AV3_BEATS`` consecutive such beats at a
    regular ventricular rate of at most ``AV3_MAX_BPM`` (an escape rhythm),
    a regular atrial rhythm at least ``AV3_RATIO`` times faster with its P
    waves found for most cycles, and PR intervals that wander (spread over
    ``AV3_PR_SPREAD_S``, mostly not equal): the P waves march through.

    Second degree: between two such beats, both conducted (a P wave
    0.10-0.45 s before each), exactly one P wave after the T wave that no QRS
    followed, midway between their P waves (``AV2_MIDWAY``): the atrial
    cycle went on and one beat was dropped (a blocked premature P wave comes
    early; a residue of the T wave is locked to the QRS, not to the P
    waves; ``AV2_LOCKED`` conducted neighbours with the same wave at the same
    distance after their QRS, before their own P wave, prove it is). Among
    conducted beats the dropped one leaves a pause (``AV2_PAUSE`` times their
    RR); in 2:1 block, where every interval is alike, the P wave must clear
    the T wave by ``AV2_CLEAR_S``. At least ``AV2_MIN_DROPS`` dropped beats
    (``AV2_TWO_ONE_MIN`` for 2:1) within ``AV2_WITHIN_S`` of each other, the
    conduction resuming the same way after each (the PR after it repeats
    within ``AV2_PR_REPEAT_S``, as in Mobitz I and II; P waves that fall
    midway by chance in AV dissociation have random PRs). Its evidence says
    whether the PR before the dropped beat was longer than after it
    (``progressive_pr``: Wenckebach), constant (``constant_pr``: Mobitz II)
    or every other P wave was dropped (``2:1``, which cannot tell the two
    apart).

    When unsure, nothing: every condition must hold, and beats without
    P-wave findings (low sampling rate, no P wave found) never count.
    """
    nb = t.size
    out: list[Episode] = []
    if nb < AV3_BEATS + 1:
        return out
    pr, blocked = atrial["pr_s"], atrial["blocked_p"]
    pw, free_pr, pp = atrial["free_p"], atrial["free_pr_s"], atrial["free_pp_s"]
    rr = np.diff(t)

    # ---- third degree, per window of AV3_BEATS beats (AV3_BEATS - 1 intervals ending at beats a+1 ...)
    w = AV3_BEATS
    win = np.lib.stride_tricks.sliding_window_view
    beats_ok = win(ok, w).all(axis=1)
    rr_w = win(rr, w - 1)                                                 # (nW, w-1); window a: rr[a:a+w-1]
    med_rr = np.median(rr_w, axis=1)
    regular_v = (np.abs(rr_w - med_rr[:, None]) <= AV3_RR_SPREAD * med_rr[:, None]).all(axis=1)
    pp_w, pr_w, pw_w = (win(v[1:], w - 1) for v in (pp, free_pr, pw))
    pp_known = np.isfinite(pp_w).all(axis=1)
    cycle = np.where(pp_known, np.median(np.nan_to_num(pp_w, nan=1.0), axis=1), np.inf)
    v_rate = 60.0 / med_rr
    a_rate = 60.0 / cycle
    found = np.nan_to_num(pw_w, nan=0.0).sum(axis=1) >= AV3_P_FOUND * rr_w.sum(axis=1) / cycle
    pr_known = np.isfinite(pr_w)
    n_pr = pr_known.sum(axis=1)
    spread = np.where(pr_known, pr_w, -np.inf).max(axis=1) - np.where(pr_known, pr_w, np.inf).min(axis=1)
    pr_med = _median_finite(np.where(pr_known, pr_w, np.inf))
    fixed = (pr_known & (np.abs(np.nan_to_num(pr_w) - pr_med[:, None]) <= PR_SAME_S)).sum(axis=1) / np.maximum(n_pr, 1)
    clean = win(atrial["foreign"][1:] == 0, w - 1).all(axis=1)        # no missed QRS in the window
    third_w = (beats_ok & clean & regular_v & (v_rate <= AV3_MAX_BPM) & pp_known & (a_rate >= AV3_RATIO * v_rate)
               & found & (n_pr >= w - 2) & (spread >= AV3_PR_SPREAD_S) & (fixed < AV3_PR_FIXED))
    third = np.zeros(nb, bool)
    for j in range(w):
        third[j:j + third_w.size] |= third_w
    for a, b in _runs(third):
        inside = slice(a + 1, b)
        out.append(Episode("av_block", float(t[a]), float(t[b - 1]), {
            "degree": 3, "beats": b - a, "ventricular_rate_bpm": round(60.0 * (b - a - 1) / float(t[b - 1] - t[a]), 1),
            "atrial_rate_bpm": round(60.0 / float(np.nanmedian(pp[inside])), 1)}))

    # ---- second degree: dropped beats (one non-conducted P wave, on the cycle of the conducted ones)
    late = atrial["late_p_s"]
    p_before = np.concatenate([[np.nan], t[:-1] - pr[:-1]])            # P wave of the interval's first beat
    p_after = t - pr                                                    # ... and of its last
    blocked_at = np.concatenate([[np.nan], t[:-1]]) + late
    half = 0.5 * (p_after - p_before)
    conducted = (pr >= AV2_PR_S[0]) & (pr <= AV2_PR_S[1])
    with np.errstate(invalid="ignore"):
        drop = ok & np.concatenate([[False], ok[:-1]]) & conducted & np.concatenate([[False], conducted[:-1]])
        drop &= (blocked == 1) & (np.abs(blocked_at - (p_before + half)) <= AV2_MIDWAY * half) & ~third
        drop &= atrial["foreign"] == 0                                 # no QRS-sized wave the detector missed
        # a wave at the same distance after the QRS in conducted intervals, before their own P wave,
        # is locked to the QRS (the end of a T wave), not a P wave
        extra = np.concatenate([[False], rr - late[1:] - pr[1:] > AV2_PR_S[0]]) & conducted
    interval = np.concatenate([[np.nan], rr])                           # RR ending at each beat
    candidate = drop.copy()
    for i in np.flatnonzero(candidate):
        near = np.r_[max(i - AV2_NEIGHBOURS, 1):i, i + 1:min(i + AV2_NEIGHBOURS + 1, nb)]
        plain = near[conducted[near] & ~candidate[near]]
        if plain.size >= 2:
            # a dropped beat among conducted ones: a pause, and no QRS-locked wave in its neighbours
            locked = near[extra[near] & ~candidate[near]]
            drop[i] = interval[i] >= AV2_PAUSE * float(np.median(interval[plain])) and \
                (np.abs(late[locked] - late[i]) <= PR_SAME_S).sum() < AV2_LOCKED
        else:
            # 2:1, where every interval looks alike: the P wave clearly clear of the T wave
            qt_rr = interval[i - 1] if i >= 2 else interval[i]
            drop[i] = late[i] >= T_END_S[0] + T_END_S[1] * np.sqrt(qt_rr) + AV2_CLEAR_S
    idx = np.flatnonzero(drop)
    if idx.size < AV2_MIN_DROPS:
        return out
    for group in np.split(idx, np.flatnonzero(np.diff(t[idx]) > AV2_WITHIN_S) + 1):
        if group.size < AV2_MIN_DROPS or np.ptp(pr[group]) > AV2_PR_REPEAT_S \
                or np.ptp(pr[group - 1]) > 2 * AV2_PR_REPEAT_S:
            continue                              # conduction resumes the same way after each drop
        a, b = int(group[0]) - 1, int(group[-1])
        two_one = group.size >= AV2_TWO_ONE * (b - a)
        if two_one and group.size < AV2_TWO_ONE_MIN:
            continue
        if two_one:
            pattern = "2:1"                       # (nearly) every RR interval holds a non-conducted P wave
        elif np.median(pr[group - 1] - pr[group]) > PR_SAME_S:
            pattern = "progressive_pr"            # longer before the dropped beat than after it
        else:
            pattern = "constant_pr"
        out.append(Episode("av_block", float(t[a]), float(t[b]), {
            "degree": 2, "pattern": pattern, "non_conducted_p": int(group.size),
            "atrial_rate_bpm": round(60.0 / float(np.median(half[group])), 1),
            "ventricular_rate_bpm": round(60.0 * (b - a) / float(t[b] - t[a]), 1)}))
    out.sort(key=lambda e: e.start_s)
    return out


def _with_source(e: Episode, sources: Sequence[Episode]) -> Episode:
    """A timeline episode with the evidence of the event episode that overlaps it most."""
    best = max(sources, key=lambda s: min(s.end_s, e.end_s) - max(s.start_s, e.start_s))
    return Episode(e.label, e.start_s, e.end_s, {**e.evidence, **best.evidence})


def _absorb_short_rate_runs(background: np.ndarray) -> None:
    """Give runs of fewer than ``MIN_RATE_RUN`` beats of a sinus-rate label the label before them
    (in place), when that is a sinus-rate label too: a rate hovering at 60 or 100 /min would
    otherwise split a Holter into thousands of brady/sinus/tachy fragments."""
    runs = _runs_by_value(background)
    for i, (a, b) in enumerate(runs[1:], 1):
        prev = background[runs[i - 1][0]]
        if b - a < MIN_RATE_RUN and background[a] in _RATE_LABELS and prev in _RATE_LABELS:
            background[a:b] = prev


def _noise_blocks(disorganised: np.ndarray, t: np.ndarray, block_s: float, vf: np.ndarray | None) -> np.ndarray:
    """Disorganised blocks that are noise: not VF-like, and without a regular run of detections
    (a fast monomorphic VT or SVT has no envelope floor either, but its beats are regular)."""
    out = disorganised.copy()
    if vf is not None:
        v = np.asarray(vf, bool)[:out.size]
        out[:v.size] &= ~v
        out[1:v.size] &= ~v[:v.size - 1]          # block k's VF window spans blocks k and k+1
    for k in np.flatnonzero(out):
        near = t[(t >= (k - 1) * block_s) & (t < (k + 2) * block_s)]
        if near.size >= 5:
            rr = np.diff(near)
            # median successive change: one rate step (onset of a tachycardia) does not count
            if np.median(np.abs(np.diff(rr))) < NOISE_RR_CV * np.median(rr):
                out[k] = False
    return out


def _timeline(t: np.ndarray, background: np.ndarray, duration: float, unreadable: Sequence[tuple[float, float]],
              vf_eps: Sequence[Episode], gaps: Sequence[Episode], vt_runs: Sequence[Episode],
              svt_eps: Sequence[Episode], av_eps: Sequence[Episode] = ()) -> list[Episode]:
    """Paint the background and the events (by precedence) onto one non-overlapping timeline.

    Sweep over the elementary intervals between all edges: each takes the label of the
    highest-precedence layer covering it, else the background of the beat it follows;
    equal neighbours are merged. O(n log n), so a 24-hour Holter's thousands of events cost
    milliseconds.
    """
    if t.size:
        runs = _runs_by_value(background)
        bg_start = np.array([0.0] + [float(t[a]) for a, _ in runs[1:]])
        bg_label = np.array([background[a] for a, _ in runs], dtype=object)
    else:
        bg_start, bg_label = np.array([0.0]), np.array(["other"], dtype=object)
    levels = [  # lowest precedence first
        ("av_block", [(e.start_s, e.end_s) for e in av_eps]),
        ("svt", [(e.start_s, e.end_s) for e in svt_eps]),
        ("pause", [(e.start_s, e.end_s) for e in gaps if e.label == "pause"]),
        ("vt", [(e.start_s, e.end_s) for e in vt_runs]),
        ("asystole", [(e.start_s, e.end_s) for e in gaps if e.label == "asystole"]),
        ("vf", [(e.start_s, e.end_s) for e in vf_eps]),
        ("unreadable", list(unreadable)),
    ]
    edges = [bg_start, np.array([0.0, duration])] + [np.array(iv, dtype=np.float64).ravel() for _, iv in levels if iv]
    points = np.unique(np.clip(np.concatenate(edges), 0.0, duration))
    if points.size < 2:
        return []
    mids = 0.5 * (points[:-1] + points[1:])
    labels = bg_label[np.searchsorted(bg_start, mids, side="right") - 1]
    for name, iv in levels:
        if not iv:
            continue
        arr = np.array(sorted(iv), dtype=np.float64)
        reach = np.maximum.accumulate(arr[:, 1])
        k = np.searchsorted(arr[:, 0], mids, side="right") - 1
        covered = (k >= 0) & (mids < reach[np.maximum(k, 0)])
        labels[covered] = name
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [labels.size]])
    out = []
    for i0, i1 in zip(starts, ends):
        a, b = float(points[i0]), float(points[i1])
        lo, hi = np.searchsorted(t, [a, b], side="left")
        ev: dict[str, Any] = {"beats": int(hi - lo)}
        if hi - lo >= 2 and t[hi - 1] > t[lo]:
            ev["rate_bpm"] = round(60.0 * (hi - lo - 1) / float(t[hi - 1] - t[lo]), 1)
        out.append(Episode(str(labels[i0]), a, b, ev))
    return out


def _runs_by_value(values: np.ndarray) -> list[tuple[int, int]]:
    if values.size == 0:
        return []
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    edges = np.concatenate([[0], change, [values.size]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


# --------------------------------------------------------------------------
# 12-lead ST and T morphology for the critical-value rules (stemi, hyperkalaemia)
# --------------------------------------------------------------------------

def st_t_levels(signals: np.ndarray, fs: float, normal_beats: np.ndarray, leads: Sequence[str]) -> dict[str, Any]:
    """Per-lead ST deviation and T-wave shape from the median of the conducted (N) beats.

    Why the median beat: single-beat ST levels jitter with noise and
    respiration; carts measure ST on the median beat against the PR-segment
    baseline. The J point is the global QRS offset (slope of all leads summed
    falling to 8 % of its peak, as in :mod:`telediag.ecg.measure`); ST is read
    at J+60 ms (``st_mv``) and J+80 ms (``st80_mv``) against the median of the
    30 ms before QRS onset. ``t_peak_mv`` is the T-wave peak above baseline;
    ``t_peaked`` marks a tall T that is narrow-based (half-height width
    <= 180 ms) and symmetric (ascent/descent 0.6-1.6) - an approximation of
    "peaked" that has not been validated against a labelled hyperkalaemia set.
    Returns {} when no complete beat exists.
    """
    try:
        med, f0 = median_beats(signals, fs, normal_beats)
    except ValueError:
        return {}
    slope = np.abs(np.diff(med, axis=0)).sum(axis=1)
    k = max(int(0.01 * fs), 1)
    slope = np.convolve(slope, np.ones(k) / k, mode="same")
    search = int(0.08 * fs)
    peak = f0 - search + int(np.argmax(slope[f0 - search:f0 + search]))
    floor = float(np.percentile(slope, 10))
    level = floor + 0.08 * (slope[peak] - floor)
    below = np.flatnonzero(slope[max(peak - int(0.12 * fs), 0):peak][::-1] < level)
    onset = peak - (int(below[0]) if below.size else int(0.12 * fs))
    above = np.flatnonzero(slope[peak:peak + int(0.14 * fs)] < level)
    offset = peak + (int(above[0]) if above.size else int(0.14 * fs))
    base = np.median(med[max(onset - int(0.03 * fs), 0):onset + 1], axis=0)
    y = med - base
    j60 = min(offset + int(round(0.06 * fs)), y.shape[0] - 1)
    j80 = min(offset + int(round(0.08 * fs)), y.shape[0] - 1)
    t_lo, t_hi = offset + int(0.08 * fs), min(offset + int(0.40 * fs), y.shape[0])
    out: dict[str, Any] = {"st_mv": {}, "st80_mv": {}, "t_peak_mv": {}, "t_peaked": {},
                           "j_point_ms": round((offset - f0) * 1000.0 / fs, 1)}
    for j, lead in enumerate(leads):
        out["st_mv"][lead] = round(float(y[j60, j]), 3)
        out["st80_mv"][lead] = round(float(y[j80, j]), 3)
        if t_hi - t_lo < 3:
            continue
        seg = y[t_lo:t_hi, j]
        i_pk = int(np.argmax(seg))
        amp = float(seg[i_pk])
        out["t_peak_mv"][lead] = round(amp, 3)
        half_on = np.flatnonzero(seg[:i_pk][::-1] < amp / 2)
        half_off = np.flatnonzero(seg[i_pk:] < amp / 2)
        if amp > 0 and half_on.size and half_off.size:
            up, down = int(half_on[0]), int(half_off[0])
            width = (up + down) / fs
            out["t_peaked"][lead] = bool(width <= 0.18 and 0.6 <= up / max(down, 1) <= 1.6)
        else:
            out["t_peaked"][lead] = False
    return out
