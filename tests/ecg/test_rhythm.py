"""Rhythm episodes: each label on synthetic signals with known rhythm, MIT-BIH excerpts, pulse and chunking."""

from __future__ import annotations

import numpy as np
import pytest

from telediag.bench.refdata import project_root, shared_data_dir
from telediag.ecg import Recording, read_wfdb
from telediag.ecg.analysis import analyze, analyze_stream

SAMPLES = project_root() / "sample_data" / "wfdb"
NORMAL = [(-0.20, 0.025, 0.15), (-0.03, 0.008, -0.12), (0.0, 0.010, 1.2), (0.03, 0.008, -0.25), (0.28, 0.050, 0.30)]
NO_P = NORMAL[1:]
WIDE = [(0.0, 0.035, 1.6), (0.08, 0.04, -0.6), (0.32, 0.06, -0.4)]


def ecg(beats: list[tuple[float, list]], fs: float, duration: float, n_leads: int = 2, noise: float = 0.02,
        seed: int = 0) -> np.ndarray:
    """Sum-of-Gaussians ECG: one (time, shape) per beat, a shape being (centre, width, mV) waves."""
    t = np.arange(int(duration * fs)) / fs
    x = np.zeros((t.size, n_leads))
    gains = np.linspace(1.0, 0.6, n_leads)
    for bt, shape in beats:
        lo, hi = np.searchsorted(t, [bt - 0.5, bt + 0.7])
        tt = t[lo:hi] - bt
        x[lo:hi] += sum(a * np.exp(-0.5 * ((tt - c) / w) ** 2) for c, w, a in shape)[:, None] * gains[None, :]
    return x + np.random.default_rng(seed).normal(0, noise, x.shape)


def regular(rate: float, start: float, end: float, shape: list = NORMAL) -> list[tuple[float, list]]:
    return [(float(b), shape) for b in np.arange(start, end, 60.0 / rate)]


def labels_over(result: dict, a: float, b: float) -> dict[str, float]:
    """Seconds of each rhythm label inside [a, b)."""
    out: dict[str, float] = {}
    for e in result["rhythm"]:
        d = min(e["end_s"], b) - max(e["start_s"], a)
        if d > 0:
            out[e["label"]] = out.get(e["label"], 0.0) + d
    return out


def dominant(result: dict, a: float, b: float) -> str:
    spans = labels_over(result, a, b)
    return max(spans, key=spans.get)


def critical(result: dict) -> list[dict]:
    return [a for a in result["alarms"] if a["severity"] == "critical"]


@pytest.mark.parametrize("rate,label", [(75, "sinus"), (48, "sinus_bradycardia"), (120, "sinus_tachycardia")])
def test_sinus_rates(rate: float, label: str) -> None:
    fs = 250.0
    x = ecg(regular(rate, 0.5, 59.5), fs, 60)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    assert dominant(result, 5, 55) == label
    assert not critical(result)


def test_af_irregular_without_p_waves() -> None:
    fs = 250.0
    rng = np.random.default_rng(3)
    times = 0.5 + np.cumsum(rng.uniform(0.45, 1.05, 150))
    times = times[times < 119.0]
    t = np.arange(int(120 * fs)) / fs
    x = ecg([(float(b), NO_P) for b in times], fs, 120)
    x += 0.05 * np.sin(2 * np.pi * 6.3 * t + rng.uniform(0, 1) * np.sin(2 * np.pi * 0.4 * t))[:, None]
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    assert labels_over(result, 20, 100).get("af", 0.0) > 70.0


def test_irregular_sinus_with_p_waves_is_not_af() -> None:
    # Irregular RR but every QRS preceded by the same P wave (e.g. sinus arrhythmia/variable conduction).
    fs = 250.0
    rng = np.random.default_rng(4)
    times = 0.5 + np.cumsum(rng.uniform(0.6, 1.1, 140))
    times = times[times < 119.0]
    x = ecg([(float(b), NORMAL) for b in times], fs, 120)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    assert labels_over(result, 0, 120).get("af", 0.0) < 10.0


def test_vt_run_and_monitoring_alarm() -> None:
    fs = 250.0
    beats = regular(70, 0.5, 30.0) + regular(170, 30.6, 33.9, WIDE) + regular(70, 34.8, 59.5)
    x = ecg(beats, fs, 60)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x), rules="monitoring")
    vt = [e for e in result["rhythm"] if e["label"] == "vt"]
    assert vt and vt[0]["start_s"] == pytest.approx(30.6, abs=0.1)
    alarms = [a for a in result["alarms"] if a["type"] == "ventricular_tachycardia"]
    assert len(alarms) == 1 and alarms[0]["evidence"]["beats"] >= 5
    assert alarms[0]["text"] and alarms[0]["text_zh"]
    # resting rules: VT must last >= 30 s, so this short run raises no alarm there
    assert not analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))["alarms"]


def test_vf_from_raw_signal() -> None:
    fs = 250.0
    t = np.arange(int(60 * fs)) / fs
    x = ecg(regular(75, 0.5, 30.0), fs, 60)
    seg = (t >= 30.2) & (t < 42.0)
    vf = 0.6 * np.sin(2 * np.pi * (5.0 * t + 0.3 * np.sin(2 * np.pi * 0.3 * t)))
    vf *= 1 + 0.3 * np.sin(2 * np.pi * 0.5 * t)
    x[seg] += vf[seg, None] * np.array([1.0, 0.7])
    x += ecg(regular(75, 42.5, 59.5), fs, 60, noise=0.0)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x), rules="monitoring")
    assert labels_over(result, 30, 42).get("vf", 0.0) > 8.0
    assert any(a["type"] == "ventricular_fibrillation" for a in result["alarms"])
    assert dominant(result, 0, 28) == "sinus"


@pytest.mark.parametrize("rate", [70.0, 110.0])
def test_paced_rhythm_is_not_vt(rate: float) -> None:
    fs = 500.0
    beats = regular(75, 0.5, 20.0) + regular(rate, 20.5, 59.5, WIDE)
    x = ecg(beats, fs, 60)
    for bt, shape in beats:
        if shape is WIDE:                                   # a 1-ms, 3-mV stimulus 40 ms before each paced QRS
            k = int(round((bt - 0.04) * fs))
            x[k] += 3.0
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x), rules="monitoring")
    assert labels_over(result, 25, 58).get("paced", 0.0) > 25.0
    assert not any(a["type"] == "ventricular_tachycardia" for a in result["alarms"])


def _standstill(fs: float) -> np.ndarray:
    """Sinus, then 7 s of ventricular standstill (P waves only, readable signal), then sinus."""
    p_only = [NORMAL[0]]
    beats = regular(75, 0.5, 20.0) + regular(75, 20.4, 27.2, p_only) + regular(75, 27.6, 40.0)
    return ecg(beats, fs, 40)


def test_asystole_and_pause_episodes() -> None:
    fs = 250.0
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=_standstill(fs)), rules="monitoring")
    assert labels_over(result, 20, 27).get("asystole", 0.0) > 6.0
    # one long interval is asystole, not also an extreme bradycardia (the rate around it is 75 /min)
    assert {a["type"] for a in critical(result)} == {"asystole"}
    short = regular(75, 0.5, 20.0) + regular(75, 22.4, 40.0)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=ecg(short, fs, 40)), rules="monitoring")
    assert "pause" in labels_over(result, 19, 23) and not critical(result)


def test_pulse_refutes_false_asystole() -> None:
    fs = 250.0
    x = _standstill(fs)
    t = np.arange(x.shape[0]) / fs
    # Pleth keeps beating at 75 /min through the "standstill" (e.g. the ECG leads lost the QRS).
    phase = (t * 75 / 60.0) % 1.0
    pleth = np.where(phase < 0.3, np.sin(np.pi * phase / 0.3), 0.0)
    pleth += 0.01 * np.random.default_rng(1).normal(size=t.size)
    rec = Recording(fs=fs, leads=("II", "V1"), signals=x, pulsatile={"PLETH": (fs, pleth)})
    result = analyze(rec, rules="monitoring")
    assert not critical(result)
    assert "asystole" not in labels_over(result, 20, 27)
    # a flat pleth (no pulse) does not refute it, and the alarm says no pulse was found
    rec = Recording(fs=fs, leads=("II", "V1"), signals=x, pulsatile={"PLETH": (fs, np.zeros(t.size))})
    asystole = [a for a in critical(analyze(rec, rules="monitoring")) if a["type"] == "asystole"]
    assert asystole and asystole[0]["evidence"]["pulse"] == "not found"


@pytest.mark.parametrize("kind", ["noise", "lead_off", "clipped"])
@pytest.mark.parametrize("rules", ["resting", "holter", "monitoring"])
def test_no_critical_alarm_from_bad_signal(kind: str, rules: str) -> None:
    fs = 250.0
    n = int(60 * fs)
    rng = np.random.default_rng(11)
    if kind == "noise":
        x = rng.normal(0, 0.4, (n, 2)) + np.cumsum(rng.normal(0, 0.05, (n, 2)), axis=0) * 0.01
    elif kind == "lead_off":
        x = np.zeros((n, 2))
        x[: int(20 * fs)] = ecg(regular(70, 0.5, 19.5), fs, 20)   # then both leads fall off
    else:
        x = np.clip(ecg(regular(70, 0.5, 59.5), fs, 60) * 8.0 + rng.normal(0, 0.5, (n, 2)), -1.0, 1.0)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x), rules=rules)
    assert not critical(result), critical(result)
    if kind == "lead_off":
        assert labels_over(result, 22, 60).get("unreadable", 0.0) > 35.0


def test_mitdb_sample_excerpts() -> None:
    sinus = analyze(read_wfdb(SAMPLES / "mitdb101_600s"))
    assert set(labels_over(sinus, 0, 60)) <= {"sinus", "sinus_bradycardia"}
    bigeminy = analyze(read_wfdb(SAMPLES / "mitdb119_300s"), rules="holter")
    assert "af" not in labels_over(bigeminy, 0, 60)          # PVCs are not AF
    assert not critical(bigeminy)


def _shared_segment(record: str, a: float, b: float) -> Recording:
    shared = shared_data_dir()
    if shared is None or not (shared / "mitdb" / f"{record}.hea").is_file():
        pytest.skip("shared MIT-BIH data not available")
    rec = read_wfdb(shared / "mitdb" / record)
    i, j = int(a * rec.fs), int(b * rec.fs)
    return Recording(fs=rec.fs, leads=rec.leads, signals=rec.signals[i:j])


def test_mitdb_af_segment() -> None:
    result = analyze(_shared_segment("201", 0.0, 180.0))          # reference: (AFIB from 0.2 s to 378 s
    assert labels_over(result, 20, 160).get("af", 0.0) > 120.0


def test_mitdb_ventricular_flutter_segment() -> None:
    result = analyze(_shared_segment("207", 1530.0, 1650.0))      # reference: (VFL 1540.9-1638.7 s
    assert labels_over(result, 15, 105).get("vf", 0.0) > 60.0
    assert any(a["type"] == "ventricular_fibrillation" for a in result["alarms"])


def test_chunked_equals_whole() -> None:
    fs = 250.0
    beats = (regular(72, 0.5, 299.0) + regular(160, 299.3, 302.0, WIDE) + regular(72, 302.8, 595.0)
             + regular(72, 598.6, 1199.0))            # VT run across the 300 s border, a 3.6-s pause near 600 s
    x = ecg(beats, fs, 1200, seed=5)
    rec = Recording(fs=fs, leads=("II", "V1"), signals=x)
    whole = analyze(rec, rules="monitoring")
    chunked = analyze(rec, rules="monitoring", chunk_s=300.0)
    q_whole, q_chunk = np.array(whole["qrs"]), np.array(chunked["qrs"])
    assert q_whole.size == q_chunk.size == len(beats)
    assert np.max(np.abs(q_whole - q_chunk)) <= 2
    assert [(a["type"], round(a["start_s"], 1)) for a in whole["alarms"]] == \
        [(a["type"], round(a["start_s"], 1)) for a in chunked["alarms"]]
    assert [e["label"] for e in whole["rhythm"]] == [e["label"] for e in chunked["rhythm"]]

    class Int16Source:
        """A sliceable 16-bit source decoded on access, as a streaming reader would be."""

        def __init__(self, raw: np.ndarray) -> None:
            self.raw, self.shape = raw, raw.shape

        def __getitem__(self, rows: slice) -> np.ndarray:
            return self.raw[rows] / 1000.0

    source = Int16Source(np.round(x * 1000.0).astype(np.int16))
    streamed = analyze_stream(source, fs, ("II", "V1"), rules="monitoring", chunk_s=300.0)
    assert np.max(np.abs(np.array(streamed["qrs"]) - q_chunk)) <= 2
    assert [a["type"] for a in streamed["alarms"]] == [a["type"] for a in chunked["alarms"]]


def test_icu_record_keeps_pulse_and_raises_no_false_asystole() -> None:
    shared = shared_data_dir()
    base = shared / "alarms" / "challenge-2015" / "a109l" if shared else None
    if base is None or not base.with_suffix(".hea").is_file():
        pytest.skip("shared PhysioNet/CinC 2015 data not available")
    rec = read_wfdb(base)                               # experts: the monitor's asystole alarm was false
    assert rec.leads == ("II", "aVF") and set(rec.pulsatile) == {"ABP"}
    fs_abp, abp = rec.pulsatile["ABP"]
    assert fs_abp == rec.fs and abp.shape == (rec.n_samples,)
    n = int(300 * rec.fs)
    cut = Recording(fs=rec.fs, leads=rec.leads, signals=rec.signals[:n], pulsatile={"ABP": (fs_abp, abp[:n])})
    result = analyze(cut, rules="monitoring")
    assert not [a for a in result["alarms"] if a["type"] == "asystole" and a["end_s"] >= 284.0]


# ---------------------------------------------------------------- pulse fusion, run growth, sine-wave VT

def _pleth(fs: float, times: list[float], duration: float) -> np.ndarray:
    """A clean pleth with one pulse 0.25 s after each given beat time."""
    t = np.arange(int(duration * fs)) / fs
    y = np.zeros(t.size)
    for bt in times:
        y += np.exp(-0.5 * ((t - bt - 0.25) / 0.08) ** 2)
    return y + 0.005 * np.random.default_rng(2).normal(size=t.size)


def test_clean_pleth_suppresses_asystole_on_flat_ecg() -> None:
    fs = 250.0
    x = ecg(regular(75, 0.5, 20.0) + regular(75, 28.0, 40.0), fs, 40)
    quiet = slice(int(20.2 * fs), int(27.8 * fs))                     # QRS lost for 7.6 s, signal readable
    x[quiet] = np.random.default_rng(5).normal(0, 0.02, x[quiet].shape)
    pulses = regular(75, 0.5, 40.0)
    rec = Recording(fs=fs, leads=("II", "V1"), signals=x,
                    pulsatile={"PLETH": (fs, _pleth(fs, [b for b, _ in pulses], 40))})
    result = analyze(rec, rules="monitoring")
    assert not [a for a in critical(result) if a["type"] == "asystole"]
    # without the pleth the same ECG is an asystole
    bare = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x), rules="monitoring")
    assert any(a["type"] == "asystole" for a in critical(bare))


def test_wide_run_at_160_is_vt_with_a_pulse_that_follows_it() -> None:
    fs = 250.0
    beats = regular(70, 0.5, 30.0) + regular(160, 30.6, 36.0, WIDE) + regular(70, 37.0, 59.5)
    rec = Recording(fs=fs, leads=("II", "V1"), signals=ecg(beats, fs, 60),
                    pulsatile={"PLETH": (fs, _pleth(fs, [b for b, _ in beats], 60))})
    result = analyze(rec, rules="monitoring")
    assert labels_over(result, 30.6, 36.0).get("vt", 0.0) > 4.0
    vt = [a for a in result["alarms"] if a["type"] == "ventricular_tachycardia"]
    assert vt and vt[0]["evidence"]["pulse"] == "present"      # VT with a pulse is still VT


def test_unchanged_pulse_refutes_an_ecg_vt_run() -> None:
    fs = 250.0
    # the ECG shows a wide run at 160 /min (e.g. artefact) while the heart keeps beating at 70 /min
    beats = regular(70, 0.5, 30.0) + regular(160, 30.6, 36.0, WIDE) + regular(70, 37.0, 59.5)
    pulse_times = [b for b, _ in regular(70, 0.5, 59.5)]
    rec = Recording(fs=fs, leads=("II", "V1"), signals=ecg(beats, fs, 60),
                    pulsatile={"PLETH": (fs, _pleth(fs, pulse_times, 60))})
    result = analyze(rec, rules="monitoring")
    assert not [a for a in result["alarms"] if a["type"] == "ventricular_tachycardia"]
    assert "vt" not in labels_over(result, 30, 37)


def test_run_grows_by_end_complexes_that_repeat_it() -> None:
    from telediag.ecg.rhythm import detect_rhythm
    fs = 250.0
    t = np.concatenate([np.arange(0.5, 20.0, 0.8), 20.0 + np.arange(5) * 0.4, 22.4 + np.arange(10) * 0.8])
    labels = ["N"] * t.size
    run = np.arange(25, 30)                        # five complexes at 150 /min ...
    for i in run[1:-1]:
        labels[i] = "V"                            # ... of which the classifier called the middle three V
    shape = np.full(t.size, 0.95)
    shape[run] = 0.2                               # all five unlike the conducted QRS
    alike = np.full(t.size, 0.95)
    alike[run[0]] = 0.1                            # the first differs from the sinus beat before it
    alike[run[-1] + 1] = 0.1                       # the sinus beat after the run differs from its last
    n = int(32 * fs)
    args = (np.round(t * fs).astype(np.int64), labels, fs, n, np.zeros(16, bool), 2.0)
    grown = detect_rhythm(*args, shape=shape, alike=alike)
    assert grown.vt_runs and grown.vt_runs[0].evidence["beats"] == 5
    plain = detect_rhythm(*args)
    assert plain.vt_runs and plain.vt_runs[0].evidence["beats"] == 3


def test_slow_ventricular_run_is_kept_for_rules_but_not_labelled_vt() -> None:
    from telediag.ecg.rhythm import detect_rhythm
    fs = 250.0
    t = np.concatenate([np.arange(0.5, 20.0, 0.9), 20.0 + np.arange(6) * 0.62, 24.0 + np.arange(8) * 0.9])
    labels = ["N"] * t.size
    first = int(np.searchsorted(t, 20.0))
    for i in range(first, first + 6):
        labels[i] = "V"                            # 6 ventricular beats at ~97 /min
    rh = detect_rhythm(np.round(t * fs).astype(np.int64), labels, fs, int(32 * fs), np.zeros(16, bool), 2.0)
    assert not rh.vt_runs and len(rh.ventricular_runs) == 1
    assert 95.0 < rh.ventricular_runs[0].evidence["rate_bpm"] <= 100.0


def test_a_gap_inside_a_ventricular_run_does_not_dilute_its_rate() -> None:
    # VT at 105 /min with 3.8 s of lost complexes in the middle (noise, missed beats): over its whole
    # span the run would come out at about 94 /min; the trains either side of the gap are VT
    from telediag.ecg.rhythm import detect_rhythm
    fs = 250.0
    cycle = 60.0 / 105.0
    before, after = 10.0 + np.arange(35) * cycle, 33.8 + np.arange(35) * cycle
    t = np.concatenate([np.arange(0.5, 10.0, 0.8), before, after, after[-1] + 0.8 + np.arange(10) * 0.8])
    labels = ["N"] * t.size
    first = int(np.searchsorted(t, 10.0))
    for i in range(first, first + 70):
        labels[i] = "V"
    n = int((t[-1] + 1.0) * fs)
    rh = detect_rhythm(np.round(t * fs).astype(np.int64), labels, fs, n, np.zeros(n // 500 + 1, bool), 2.0)
    assert [round(e.evidence["rate_bpm"]) for e in rh.vt_runs] == [105, 105]
    assert (70 - 1) * 60.0 / (after[-1] - before[0]) < 100.0


def test_sine_wave_vt_is_vt_not_unreadable() -> None:
    fs = 250.0
    t = np.arange(int(60 * fs)) / fs
    x = ecg(regular(75, 0.5, 30.0) + regular(75, 42.5, 59.5), fs, 60)
    seg = (t >= 30.2) & (t < 42.0)
    x[seg] += 1.2 * np.sin(2 * np.pi * 2.1 * t[seg])[:, None] * np.array([1.0, 0.7])   # 126 /min sinusoid
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x), rules="monitoring")
    vt = [a for a in result["alarms"] if a["type"] == "ventricular_tachycardia"]
    assert vt and 30.0 <= vt[0]["start_s"] <= 34.0
    assert 110.0 < vt[0]["evidence"]["rate_bpm"] < 140.0
    assert labels_over(result, 32, 40).get("unreadable", 0.0) == 0.0
    assert not any(a["type"] == "ventricular_fibrillation" for a in result["alarms"])


def test_pulse_counts_a_run_whose_beats_the_ecg_missed() -> None:
    from telediag.ecg.rhythm import detect_rhythm
    fs = 250.0
    # sinus at 75 /min, then a run at 150 /min of which the ECG found only every other complex
    sinus = np.arange(0.5, 20.0, 0.8)
    run = 20.0 + np.arange(8) * 0.4
    after = run[-1] + 0.8 + np.arange(10) * 0.8
    t = np.concatenate([sinus, run[::2], after])
    labels = ["N"] * sinus.size + ["V"] * run[::2].size + ["N"] * after.size
    pulses = [np.concatenate([sinus, run, after]) + 0.25]          # every beat ejects
    args = (np.round(t * fs).astype(np.int64), labels, fs, int(32 * fs), np.zeros(16, bool), 2.0)
    rh = detect_rhythm(*args, pulses=pulses)
    counted = [e for e in rh.ventricular_runs if e.evidence.get("beats_from") == "pulse"]
    assert counted and counted[0].evidence["beats"] >= 7 and counted[0].evidence["rate_bpm"] > 140
    # a pulse that does not show the extra beats adds nothing (fewer pulses is a pulse deficit)
    deficit = [np.concatenate([sinus, run[::2], after]) + 0.25]
    assert not [e for e in detect_rhythm(*args, pulses=deficit).ventricular_runs
                if e.evidence.get("beats_from") == "pulse"]


def test_run_broken_by_a_conducted_looking_beat_at_the_runs_pace() -> None:
    from telediag.ecg.rhythm import detect_rhythm
    fs = 250.0
    t = np.concatenate([np.arange(0.5, 20.0, 0.8), 20.0 + np.cumsum([0.0, 0.45, 0.38, 0.40, 0.45]),
                        22.5 + np.arange(10) * 0.8])
    labels = ["N"] * t.size
    first = int(np.searchsorted(t, 20.0))
    for i in (first, first + 1, first + 3, first + 4):
        labels[i] = "V"                            # V V N V V, the N a little early: one run of five
    args = (np.round(t * fs).astype(np.int64), labels, fs, int(32 * fs), np.zeros(16, bool), 2.0)
    assert [e.evidence["beats"] for e in detect_rhythm(*args).vt_runs] == [5]
    # bigeminy: the conducted beat after a compensatory pause never joins
    t2 = np.concatenate([np.arange(0.5, 20.0, 0.8), 20.0 + np.cumsum([0.0, 0.5, 1.1, 0.5, 1.1, 0.5]),
                         24.5 + np.arange(10) * 0.8])
    labels2 = ["N"] * t2.size
    first = int(np.searchsorted(t2, 20.0))
    for i in (first + 1, first + 3, first + 5):
        labels2[i] = "V"
    rh = detect_rhythm(np.round(t2 * fs).astype(np.int64), labels2, fs, int(32 * fs), np.zeros(16, bool), 2.0)
    assert not rh.ventricular_runs


# --------------------------------------------------------------------------- atrial flutter

def flutter_ecg(fs: float, duration: float, atrial_bpm: float, ratios: tuple[int, ...], seed: int = 0,
                amp: float = 0.2, noise: float = 0.02) -> np.ndarray:
    """Sawtooth F waves (negative in II, positive in V1) and QRST without P, each QRS following an
    F wave by the same interval, the ventricles taking every 2nd, 3rd or 4th wave at random."""
    rng = np.random.default_rng(seed)
    cycle = 60.0 / atrial_bpm
    times, t = [], 0.5
    while t < duration - 1.0:
        times.append(t)
        t += cycle * rng.choice(ratios)
    x = ecg([(b, NO_P) for b in times], fs, duration, noise=noise, seed=seed)
    phase = (np.arange(x.shape[0]) / fs / cycle) % 1.0
    saw = np.where(phase < 0.75, -phase / 0.75, -(1.0 - phase) / 0.25) + 0.5
    return x + amp * saw[:, None] * np.array([1.0, -0.7])[None, :]


@pytest.mark.parametrize("fs,atrial,ratios,seed", [(250.0, 300.0, (2, 3, 4), 0), (500.0, 330.0, (2, 3, 4), 2),
                                                  (250.0, 260.0, (2, 4), 6), (360.0, 280.0, (3, 4), 5)])
def test_flutter_with_variable_conduction_is_afl(fs: float, atrial: float, ratios: tuple[int, ...], seed: int) -> None:
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=flutter_ecg(fs, 90, atrial, ratios, seed)))
    assert labels_over(result, 0, 90).get("afl", 0.0) > 60.0
    assert "af" not in labels_over(result, 0, 90)
    rates = [e["evidence"]["atrial_rate_bpm"] for e in result["rhythm"] if e["label"] == "afl"]
    assert rates and all(abs(r - atrial) <= 15.0 for r in rates)


def test_af_and_irregular_sinus_are_not_afl() -> None:
    fs = 250.0
    rng = np.random.default_rng(3)
    times = 0.5 + np.cumsum(rng.uniform(0.45, 1.05, 150))
    t = np.arange(int(90 * fs)) / fs
    # coarse, fairly organised f waves around 300 /min: still not locked to the QRS
    af = ecg([(float(b), NO_P) for b in times[times < 89.0]], fs, 90)
    af += 0.08 * np.sin(2 * np.pi * 5.0 * t + 3 * np.sin(2 * np.pi * 0.3 * t))[:, None]
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=af))
    assert "afl" not in labels_over(result, 0, 90) and labels_over(result, 0, 90).get("af", 0.0) > 50.0
    times = 0.5 + np.cumsum(np.random.default_rng(4).uniform(0.6, 1.1, 120))
    sinus = ecg([(float(b), NORMAL) for b in times[times < 89.0]], fs, 90)
    assert "afl" not in labels_over(analyze(Recording(fs=fs, leads=("II", "V1"), signals=sinus)), 0, 90)


def test_regular_flutter_is_not_claimed() -> None:
    # 2:1 and 4:1 flutter with a fixed ratio cannot be told from a sinus rhythm by this method:
    # it must not be called flutter at random either way, and sinus must never be.
    fs = 250.0
    for ratios in ((2,), (4,)):
        result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=flutter_ecg(fs, 60, 300.0, ratios)))
        assert "afl" not in labels_over(result, 0, 60)
    sinus = analyze(Recording(fs=fs, leads=("II", "V1"), signals=ecg(regular(75, 0.5, 59.5), fs, 60)))
    assert "afl" not in labels_over(sinus, 0, 60)


def test_mitdb_af_is_not_taken_for_flutter() -> None:
    # 203 holds AF and an annotated flutter whose waves are neither locked to the QRS nor below
    # 370 /min (its AF and its "AFL" are alike to this method): its AF must stay AF
    result = analyze(_shared_segment("203", 1204.0, 1496.0))      # reference: (AFIB 1204.0-1496.8 s
    assert "afl" not in labels_over(result, 0, 292)
    assert labels_over(result, 0, 292).get("af", 0.0) > 240.0


# --------------------------------------------------------------------------- AV block

P_ONLY = [(0.0, NORMAL[0][1], NORMAL[0][2])]      # the P wave of NORMAL, on its own


def av_ecg(fs: float, duration: float, atrial_bpm: float, pattern: str, ventricular_bpm: float = 40.0,
           pr: float = 0.18, qrs: list = NO_P, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """Regular P waves and QRST complexes: "3" independent (complete block at ``ventricular_bpm``),
    "2:1" every other P conducted, "mobitz" every 4th P dropped at a constant PR, "wenckebach"
    PR growing 0, 60, 90 ms until the 4th P is dropped."""
    rng = np.random.default_rng(seed)
    pp = 60.0 / atrial_bpm
    p_times = np.arange(0.3 + rng.uniform(0, pp), duration - 0.5, pp)
    if pattern == "3":
        rr = 60.0 / ventricular_bpm
        beats = [(float(b), qrs) for b in np.arange(0.5 + rng.uniform(0, rr), duration - 0.5, rr)]
    else:
        beats = []
        for i, p in enumerate(p_times):
            conducted = {"2:1": i % 2 == 0, "mobitz": i % 4 != 3, "wenckebach": i % 4 != 3}[pattern]
            delay = pr + ([0.0, 0.06, 0.09, 0.0][i % 4] if pattern == "wenckebach" else 0.0)
            if conducted and p + delay < duration - 0.5:
                beats.append((float(p + delay), qrs))
    return ecg(beats + [(float(p), P_ONLY) for p in p_times], fs, duration, noise=noise, seed=seed)


def av_blocks(result: dict) -> list[dict]:
    return [e for e in result["rhythm"] if e["label"] == "av_block"]


@pytest.mark.parametrize("fs,atrial,ventricular,qrs,seed", [(250.0, 80.0, 38.0, NO_P, 0), (250.0, 90.0, 35.0, WIDE, 1),
                                                            (500.0, 110.0, 45.0, NO_P, 7),
                                                            (360.0, 75.0, 55.0, NO_P, 9)])
def test_third_degree_av_block(fs: float, atrial: float, ventricular: float, qrs: list, seed: int) -> None:
    x = av_ecg(fs, 60, atrial, "3", ventricular, qrs=qrs, seed=seed)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    blocks = av_blocks(result)
    assert sum(e["end_s"] - e["start_s"] for e in blocks) > 40.0
    assert {e["evidence"]["degree"] for e in blocks} == {3}
    assert all(abs(e["evidence"]["atrial_rate_bpm"] - atrial) <= 0.1 * atrial for e in blocks)
    alarms = [a for a in result["alarms"] if a["type"] == "av_block_3"]
    assert alarms and alarms[0]["severity"] == "critical" and alarms[0]["evidence"]["degree"] == 3


def test_third_degree_av_block_in_a_ten_second_resting_ecg() -> None:
    fs = 500.0
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=av_ecg(fs, 10, 80.0, "3", 36.0, seed=8)))
    assert any(a["type"] == "av_block_3" for a in result["alarms"])


@pytest.mark.parametrize("fs,atrial,pattern,expected,seed", [(250.0, 75.0, "mobitz", "constant_pr", 2),
                                                             (500.0, 70.0, "wenckebach", "progressive_pr", 5),
                                                             (250.0, 72.0, "wenckebach", "progressive_pr", 3),
                                                             (250.0, 70.0, "2:1", "2:1", 6)])
def test_second_degree_av_block(fs: float, atrial: float, pattern: str, expected: str, seed: int) -> None:
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=av_ecg(fs, 60, atrial, pattern, seed=seed)))
    blocks = av_blocks(result)
    assert sum(e["end_s"] - e["start_s"] for e in blocks) > 40.0
    assert {e["evidence"]["degree"] for e in blocks} == {2}
    assert {e["evidence"]["pattern"] for e in blocks} == {expected}
    assert not any(a["type"] == "av_block_3" for a in result["alarms"])


def test_second_degree_with_a_wide_qrs() -> None:
    fs = 250.0
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=av_ecg(fs, 60, 75.0, "mobitz", qrs=WIDE, seed=4)))
    assert {e["evidence"]["degree"] for e in av_blocks(result)} == {2}


def _blocked_pacs(fs: float, duration: float, seed: int = 0) -> np.ndarray:
    """Sinus at 60 /min with every 5th cycle a premature P wave (at 60 % of the cycle) not conducted;
    the sinus node resets one cycle after it."""
    beats, t, i = [], 0.5, 0
    while t < duration - 1.5:
        beats.append((t, NORMAL))
        i += 1
        if i % 5 == 0:
            beats.append((t + 0.6 + 0.2, P_ONLY))      # the premature P (P waves sit 0.2 s before their QRS)
            t += 0.6 + 1.0
        else:
            t += 1.0
    return ecg(beats, fs, duration, seed=seed)


@pytest.mark.parametrize("kind", ["sinus_brady", "sinus", "blocked_pacs", "bigeminy", "sinus_arrhythmia", "noisy",
                                  "af"])
def test_no_av_block_without_one(kind: str) -> None:
    fs = 250.0
    rng = np.random.default_rng(11)
    if kind == "sinus_brady":
        x = ecg(regular(42, 0.5, 59.5), fs, 60)
    elif kind == "sinus":
        x = ecg(regular(75, 0.5, 59.5), fs, 60)
    elif kind == "blocked_pacs":
        x = _blocked_pacs(fs, 60)
    elif kind == "bigeminy":
        beats = []
        for k, b in enumerate(np.arange(0.5, 59.0, 1.2)):
            beats += [(float(b), NORMAL)] + ([(float(b + 0.5), WIDE)] if k % 2 == 0 else [])
        x = ecg(beats, fs, 60)
    elif kind == "sinus_arrhythmia":
        times = 0.5 + np.cumsum(1.0 + 0.25 * np.sin(2 * np.pi * np.arange(60) / 12.0))
        x = ecg([(float(b), NORMAL) for b in times[times < 59.0]], fs, 60)
    elif kind == "noisy":
        x = ecg(regular(50, 0.5, 59.5), fs, 60, noise=0.06)
    else:   # AF with a slow ventricular response
        times = 0.5 + np.cumsum(rng.uniform(0.9, 1.8, 60))
        x = ecg([(float(b), NO_P) for b in times[times < 59.0]], fs, 60)
        x += 0.05 * np.sin(2 * np.pi * 6.0 * np.arange(x.shape[0]) / fs)[:, None]
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    assert not av_blocks(result)
    assert not any(a["type"] == "av_block_3" for a in result["alarms"])


def test_no_av_block_where_p_waves_are_not_resolved() -> None:
    fs = 80.0          # below P_MIN_FS: nothing is said
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=av_ecg(fs, 60, 80.0, "3", 38.0)))
    assert not av_blocks(result)


def test_mitdb_pauses_are_not_av_block() -> None:
    # 201 at 738-780 s: sinus bradycardia, ventricular and aberrant atrial premature beats the
    # detector partly misses (a pause holding a wave midway); 115: T waves ending late.
    for record, a, b in (("201", 720.0, 800.0), ("115", 0.0, 400.0)):
        assert not av_blocks(analyze(_shared_segment(record, a, b)))
