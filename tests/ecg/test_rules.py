"""Critical-value rules: file loading and validation, and every threshold on both sides of its boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from telediag.ecg import Recording
from telediag.ecg.analysis import analyze
from telediag.ecg.rhythm import ATRIAL_DTYPE, detect_rhythm
from telediag.ecg.rules import ALARM_TYPES, BUILTIN, RulesError, evaluate, load_rules

FS = 250.0


def rhythm(times: list[float] | np.ndarray, labels: list[str] | None = None, duration: float | None = None,
           vf: list[tuple[float, float]] = ()) -> object:
    """A rhythm analysis from beat times (s) and N/V labels, all signal readable."""
    t = np.asarray(times, dtype=np.float64)
    duration = duration if duration is not None else float(t[-1]) + 0.5
    n = int(round(duration * FS))
    nb = -(-n // int(2 * FS))
    vf_blocks = np.zeros(nb, bool)
    for a, b in vf:
        vf_blocks[int(a // 2):int(b // 2) - 1] = True
    samples = np.round(t * FS).astype(np.int64)
    return detect_rhythm(samples, labels or ["N"] * t.size, FS, n, np.zeros(nb, bool), 2.0, vf_blocks)


def types(alarms: list) -> list[str]:
    return [a.type for a in alarms]


def steady(rate: float, start: float, end: float) -> list[float]:
    return list(np.arange(start, end, 60.0 / rate))


# --------------------------------------------------------------------------- loading and validation

def test_builtin_sets_load_with_versions_and_sources() -> None:
    for name in BUILTIN:
        rules = load_rules(name)
        assert rules.name == name and rules.version
        assert all(r.source and r.type in ALARM_TYPES and r.severity == "critical" for r in rules.rules)
    assert {r.type for r in load_rules("resting").rules} == set(ALARM_TYPES) - {"asystole", "extreme_tachycardia"}


BASE = 'name = "x"\nversion = "1"\n'


@pytest.mark.parametrize("text,message", [
    ('version = "1"\n[[rule]]\ntype = "pause"\nseverity = "critical"\nmin_s = 3.0\n', "'name'"),
    ('name = "x"\n[[rule]]\ntype = "pause"\nseverity = "critical"\nmin_s = 3.0\n', "'version'"),
    (BASE, "at least one"),
    (BASE + '[[rule]]\ntype = "nonsense"\nseverity = "critical"\n', "unknown type 'nonsense'"),
    (BASE + '[[rule]]\ntype = "pause"\nseverity = "loud"\nmin_s = 3.0\n', "severity 'loud'"),
    (BASE + '[[rule]]\ntype = "pause"\nseverity = "critical"\nmin_seconds = 3.0\n', "unknown parameter 'min_seconds'"),
    (BASE + '[[rule]]\ntype = "pause"\nseverity = "critical"\nmin_s = "3"\n', "min_s must be float"),
    (BASE + '[[rule]]\ntype = "pause"\nseverity = "critical"\nmin_s = -1.0\n', ">= 0"),
    (BASE + '[[rule]]\ntype = "extreme_tachycardia"\nseverity = "urgent"\nbeats = 17\n', "needs parameters"),
    (BASE + '[[rule]]\ntype = "long_qtc_r_on_t"\nseverity = "critical"\nmin_qtc_ms = 550\nwith = "x"\n', "with must"),
    (BASE + 'colour = "red"\n[[rule]]\ntype = "av_block_3"\nseverity = "info"\n', "unknown top-level"),
    ('name = "x"\nversion = \n', "not valid TOML"),
])
def test_rules_file_validation_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError, match=message) as info:
        load_rules(path)
    assert "mine.toml" in str(info.value)


def test_rules_file_by_path_and_unknown_name(tmp_path: Path) -> None:
    path = tmp_path / "clinic.toml"
    path.write_text(BASE + '[[rule]]\ntype = "pause"\nseverity = "urgent"\nsource = "local"\nmin_s = 2.5\n')
    rules = load_rules(path)
    alarms = evaluate(rules, rhythm(steady(60, 1, 10) + [12.6] + steady(60, 13.6, 20)))
    assert types(alarms) == ["pause"] and alarms[0].severity == "urgent"
    assert alarms[0].evidence["rules"] == "x" and alarms[0].evidence["source"] == "local"
    with pytest.raises(RulesError, match="neither a built-in"):
        load_rules("no-such-rules")


# --------------------------------------------------------------------------- resting boundaries

@pytest.mark.parametrize("gap,expected", [(2.9, False), (3.1, True)])
def test_resting_pause_boundary(gap: float, expected: bool) -> None:
    beats = steady(75, 0.5, 5.0)
    beats += [beats[-1] + gap] + list(beats[-1] + gap + np.arange(1, 6) * 0.8)
    alarms = evaluate(load_rules("resting"), rhythm(beats, duration=beats[-1] + 0.5))
    assert ("pause" in types(alarms)) == expected
    if expected:
        assert alarms[0].evidence["rr_s"] == pytest.approx(gap, abs=0.005)
        assert alarms[0].text.startswith("Pause") and "长RR" in alarms[0].text_zh


@pytest.mark.parametrize("rate,expected", [(35.0, True), (36.0, False)])
def test_resting_mean_rate_boundary(rate: float, expected: bool) -> None:
    beats = steady(rate, 0.3, 10.0)
    alarms = evaluate(load_rules("resting"), rhythm(beats, duration=10.0))
    assert ("extreme_bradycardia" in types(alarms)) == expected


@pytest.mark.parametrize("qtc,expected", [(545.0, False), (555.0, True)])
def test_resting_qtc_r_on_t_boundary(qtc: float, expected: bool) -> None:
    beats = steady(60, 0.5, 6.0) + [5.5 + 0.40] + steady(60, 7.5, 10.0)    # a PVC 400 ms after a beat
    labels = ["N"] * 6 + ["V"] + ["N"] * 3
    rh = rhythm(beats, labels, duration=10.0)
    alarms = evaluate(load_rules("resting"), rh, {"qtc_ms": qtc, "qt_ms": 480.0})
    assert ("long_qtc_r_on_t" in types(alarms)) == expected
    # no R-on-T beat: no alarm whatever the QTc
    assert "long_qtc_r_on_t" not in types(evaluate(load_rules("resting"), rhythm(steady(60, 0.5, 10.0)),
                                                   {"qtc_ms": 600.0, "qt_ms": 480.0}))


@pytest.mark.parametrize("rate,seconds,expected", [(151, 31, True), (149, 31, False), (151, 29, False),
                                                   (149, 29, False)])
def test_resting_vt_boundary(rate: float, seconds: float, expected: bool) -> None:
    k = int(round(rate * seconds / 60.0))          # intervals, so the run spans ~seconds at exactly rate
    vt = list(5.0 + np.arange(k + 1) * 60.0 / rate)
    beats = steady(70, 0.5, 4.5) + vt + list(vt[-1] + 1.0 + np.arange(4) * 0.85)
    labels = ["N"] * len(steady(70, 0.5, 4.5)) + ["V"] * len(vt) + ["N"] * 4
    for name in ("resting", "holter"):
        alarms = evaluate(load_rules(name), rhythm(beats, labels))
        assert ("ventricular_tachycardia" in types(alarms)) == expected, name


@pytest.mark.parametrize("st_v2,expected", [(0.30, False), (0.31, True)])
def test_stemi_precordial_boundary(st_v2: float, expected: bool) -> None:
    morph = {"st_mv": {"I": 0.0, "II": 0.0, "V1": 0.35, "V2": st_v2, "V3": 0.1, "V4": 0.0}}
    alarms = evaluate(load_rules("resting"), rhythm(steady(70, 0.5, 10.0)), {}, morph)
    assert ("stemi" in types(alarms)) == expected


@pytest.mark.parametrize("st,expected", [(0.09, False), (0.10, True)])
def test_stemi_inferior_boundary(st: float, expected: bool) -> None:
    morph = {"st_mv": {"I": -0.05, "II": st, "III": 0.2, "aVF": 0.0}}
    alarms = evaluate(load_rules("resting"), rhythm(steady(70, 0.5, 10.0)), {}, morph)
    assert ("stemi" in types(alarms)) == expected
    if expected:
        assert set(alarms[0].evidence["leads"]) == {"II", "III"}


def test_stemi_end_to_end_on_synthetic_twelve_lead() -> None:
    leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    t = np.arange(int(10 * 500)) / 500.0
    x = np.zeros((t.size, len(leads)))
    st = {"II": 0.25, "III": 0.25, "aVF": 0.25}
    for bt in np.arange(0.5, 9.5, 0.8):
        tt = t - bt
        qrs = 1.0 * np.exp(-0.5 * (tt / 0.012) ** 2) - 0.2 * np.exp(-0.5 * ((tt - 0.03) / 0.01) ** 2)
        p = 0.12 * np.exp(-0.5 * ((tt + 0.17) / 0.025) ** 2)
        tw = 0.3 * np.exp(-0.5 * ((tt - 0.30) / 0.05) ** 2)
        for j, lead in enumerate(leads):
            rise, fall = 1 / (1 + np.exp(-(tt - 0.05) / 0.005)), 1 / (1 + np.exp((tt - 0.30) / 0.04))
            plateau = st.get(lead, 0.0) * rise * fall
            x[:, j] += qrs + p + tw + plateau
    result = analyze(Recording(fs=500.0, leads=leads, signals=x + np.random.default_rng(2).normal(0, 0.01, x.shape)))
    stemi = [a for a in result["alarms"] if a["type"] == "stemi"]
    assert stemi and {"II", "III", "aVF"} <= set(stemi[0]["evidence"]["leads"])


def test_hyperkalaemia_pattern() -> None:
    rh = rhythm(steady(70, 0.5, 10.0))
    morph = {"t_peak_mv": {"V2": 1.2, "V3": 0.9}, "t_peaked": {"V2": True, "V3": True}}
    rules = load_rules("resting")
    assert "hyperkalaemia" in types(evaluate(rules, rh, {"qrs_ms": 130.0, "pr_ms": None}, morph))
    assert "hyperkalaemia" not in types(evaluate(rules, rh, {"qrs_ms": 110.0, "pr_ms": None}, morph))
    assert "hyperkalaemia" not in types(evaluate(rules, rh, {"qrs_ms": 130.0, "pr_ms": 160.0}, morph))


@pytest.mark.parametrize("rate,expected", [(195.0, False), (205.0, True)])
def test_resting_rapid_svt_boundary(rate: float, expected: bool) -> None:
    beats = steady(80, 0.5, 5.0) + list(5.0 + np.arange(1, 40) * 60.0 / rate)
    alarms = evaluate(load_rules("resting"), rhythm(beats))
    assert ("svt_rapid" in types(alarms)) == expected


def test_af_preexcited_and_rapid() -> None:
    rng = np.random.default_rng(8)
    rr = rng.uniform(0.23, 0.36, 120)                # irregular, mean ventricular rate ~205 /min
    rr[50] = 0.22                                   # shortest RR 220 ms
    beats = list(0.5 + np.cumsum(rr))
    alarms = evaluate(load_rules("resting"), rhythm(beats))
    assert "af_preexcited" in types(alarms) and "af_rapid" in types(alarms)
    rr = np.clip(rr, 0.26, None)
    alarms = evaluate(load_rules("resting"), rhythm(list(0.5 + np.cumsum(rr))))
    assert "af_preexcited" not in types(alarms)


def _with_atrial(times: list[float] | np.ndarray, **fields: np.ndarray | float) -> object:
    """A rhythm analysis from beat times with per-beat atrial findings (the rest unknown)."""
    t = np.asarray(times, dtype=np.float64)
    atrial = np.zeros(t.size, ATRIAL_DTYPE)
    for k in ATRIAL_DTYPE.names:
        atrial[k] = fields.get(k, np.nan)
    n = int(round((float(t[-1]) + 0.5) * FS))
    nb = -(-n // int(2 * FS))
    return detect_rhythm(np.round(t * FS).astype(np.int64), ["N"] * t.size, FS, n, np.zeros(nb, bool), 2.0,
                         np.zeros(nb, bool), atrial=atrial)


@pytest.mark.parametrize("rate,expected", [(58.0, True), (66.0, False)])
def test_av_block_3_from_dissociated_p_waves(rate: float, expected: bool) -> None:
    # regular P waves at 80 /min marching through a regular ventricular rhythm; an escape rhythm
    # is slow (<= 60 /min): at 66 /min the same findings are not called complete block
    beats = steady(rate, 0.5, 30.0)
    pr = np.random.default_rng(1).uniform(0.05, 0.6, len(beats))
    rh = _with_atrial(beats, free_p=1.0, free_pr_s=pr, free_pp_s=0.75, foreign=0.0, consistency=0.05)
    alarms = evaluate(load_rules("resting"), rh)
    assert ("av_block_3" in types(alarms)) == expected
    if expected:
        assert {a.evidence["degree"] for a in alarms if a.type == "av_block_3"} == {3}
    # the same P waves at a fixed PR are conducted: no block
    fixed = _with_atrial(beats, free_p=1.0, free_pr_s=0.18, free_pp_s=0.75, foreign=0.0, consistency=0.05)
    assert "av_block_3" not in types(evaluate(load_rules("resting"), fixed))


def test_second_degree_block_is_not_a_critical_alarm() -> None:
    # Mobitz II: every 4th P wave (80 /min) not conducted, constant PR; an episode of degree 2,
    # which the resting rules do not list as a critical value
    beats, t = [], 0.5
    for i in range(40):
        beats.append(t)
        t += 1.5 if i % 3 == 2 else 0.75
    t_arr = np.asarray(beats)
    drop = np.r_[False, np.diff(t_arr) > 1.0]
    rh = _with_atrial(beats, pr_s=0.18, blocked_p=np.where(drop, 1.0, 0.0), late_p_s=np.where(drop, 0.57, np.nan),
                      foreign=0.0)
    episodes = [e for e in rh.episodes if e.label == "av_block"]
    assert episodes and {e.evidence["degree"] for e in episodes} == {2}
    assert "av_block_3" not in types(evaluate(load_rules("resting"), rh))


def test_rapid_flutter_alarms_like_af() -> None:
    rng = np.random.default_rng(8)
    beats = list(0.5 + np.cumsum(rng.uniform(0.24, 0.32, 150)))     # irregular, ~215 /min
    rh = _with_atrial(beats, flutter_bpm=300.0, consistency=0.6)
    assert {e.label for e in rh.episodes} == {"afl"}
    alarms = [a for a in evaluate(load_rules("resting"), rh) if a.type == "af_rapid"]
    assert alarms and alarms[0].evidence["rhythm"] == "afl"


# --------------------------------------------------------------------------- holter boundaries

def _pauses(gaps: list[float], rate: float = 70.0) -> list[float]:
    beats = steady(rate, 0.5, 10.0)
    for g in gaps:
        beats += [beats[-1] + g]
        beats += list(beats[-1] + np.arange(1, 12) * 60.0 / rate)
    return beats


@pytest.mark.parametrize("gaps,expected", [([3.1, 3.1], False), ([3.1, 3.1, 3.1], True), ([3.9], False),
                                           ([4.1], True)])
def test_holter_pause_counts(gaps: list[float], expected: bool) -> None:
    alarms = evaluate(load_rules("holter"), rhythm(_pauses(gaps)))
    assert ("pause" in types(alarms)) == expected


@pytest.mark.parametrize("gap,expected", [(4.9, False), (5.1, True)])
def test_holter_pause_in_af(gap: float, expected: bool) -> None:
    rng = np.random.default_rng(9)
    rr = list(rng.uniform(0.5, 1.1, 60)) + [gap] + list(rng.uniform(0.5, 1.1, 60))
    rh = rhythm(list(0.5 + np.cumsum(rr)))
    k = int(np.argmax(np.diff(rh.beat_times_s)))
    assert rh.background[k] == "af"
    assert ("pause" in types(evaluate(load_rules("holter"), rh))) == expected


# --------------------------------------------------------------------------- monitoring boundaries

@pytest.mark.parametrize("gap,expected", [(3.9, False), (4.1, True)])
def test_monitoring_asystole_boundary(gap: float, expected: bool) -> None:
    beats = steady(70, 0.5, 10.0)
    beats += [beats[-1] + gap] + list(beats[-1] + gap + np.arange(1, 10) * 0.85)
    assert ("asystole" in types(evaluate(load_rules("monitoring"), rhythm(beats)))) == expected


@pytest.mark.parametrize("rate,n_rr,expected", [(44.0, 3, True), (46.0, 3, False), (40.0, 2, False)])
def test_monitoring_bradycardia_boundary(rate: float, n_rr: int, expected: bool) -> None:
    # monitoring confirms with a margin: < 45 /min over 4 beats (3 RR)
    beats = steady(70, 0.5, 10.0)
    beats += list(beats[-1] + np.arange(1, n_rr + 1) * 60.0 / rate)
    beats += list(beats[-1] + np.arange(1, 8) * 0.85)
    assert ("extreme_bradycardia" in types(evaluate(load_rules("monitoring"), rhythm(beats)))) == expected


def test_monitoring_bradycardia_is_not_one_long_interval() -> None:
    # one 3-s interval pulls the mean of 4 beats at 75 /min below 45 /min, but the rate is not slow
    beats = steady(75, 0.5, 10.0)
    beats += [beats[-1] + 3.0] + list(beats[-1] + 3.0 + np.arange(1, 8) * 0.8)
    found = types(evaluate(load_rules("monitoring"), rhythm(beats)))
    assert "extreme_bradycardia" not in found
    # two slow intervals of three are a slow rate
    beats = steady(75, 0.5, 10.0)
    beats += list(beats[-1] + np.cumsum([1.8, 1.8, 0.8]))
    beats += list(beats[-1] + np.arange(1, 8) * 0.8)
    assert "extreme_bradycardia" in types(evaluate(load_rules("monitoring"), rhythm(beats)))


@pytest.mark.parametrize("rate,n,expected", [(131.0, 12, True), (129.0, 12, False), (131.0, 11, False)])
def test_monitoring_tachycardia_boundary(rate: float, n: int, expected: bool) -> None:
    beats = steady(70, 0.5, 10.0)
    beats += list(beats[-1] + np.arange(1, n) * 60.0 / rate)
    beats += list(beats[-1] + np.arange(1, 8) * 0.85)
    assert ("extreme_tachycardia" in types(evaluate(load_rules("monitoring"), rhythm(beats)))) == expected


def test_monitoring_tachycardia_is_not_double_counting() -> None:
    # 125 /min with two beats counted twice (a tall T wave): the mean of 12 beats passes 130 /min,
    # the rhythm does not
    beats = steady(70, 0.5, 10.0)
    run = list(beats[-1] + np.arange(1, 30) * 0.48)
    extra = [run[10] + 0.2, run[14] + 0.2]
    beats = sorted(beats + run + extra + list(run[-1] + np.arange(1, 8) * 0.85))
    assert "extreme_tachycardia" not in types(evaluate(load_rules("monitoring"), rhythm(beats)))
    beats = steady(70, 0.5, 10.0)
    beats += list(beats[-1] + np.arange(1, 30) * 60.0 / 135.0)
    beats += list(beats[-1] + np.arange(1, 8) * 0.85)
    assert "extreme_tachycardia" in types(evaluate(load_rules("monitoring"), rhythm(beats)))


@pytest.mark.parametrize("n_v,rate,expected", [(4, 100.0, True), (3, 110.0, False), (4, 94.0, False)])
def test_monitoring_vt_boundary(n_v: int, rate: float, expected: bool) -> None:
    beats = steady(70, 0.5, 10.0)
    n0 = len(beats)
    beats += list(beats[-1] + np.arange(1, n_v + 1) * 60.0 / rate)
    beats += list(beats[-1] + 1.0 + np.arange(6) * 0.85)
    labels = ["N"] * n0 + ["V"] * n_v + ["N"] * 6
    assert ("ventricular_tachycardia" in types(evaluate(load_rules("monitoring"), rhythm(beats, labels)))) == expected


@pytest.mark.parametrize("blocks,seconds", [(1, 4.0), (2, 6.0)])
def test_vf_duration(tmp_path: Path, blocks: int, seconds: float) -> None:
    # VF is judged on 4-s windows stepped by 2 s: n flagged windows span 2 n + 2 seconds.
    beats = steady(70, 0.5, 10.0) + steady(70, 10.0 + seconds, 30.0)
    rh = rhythm(beats, vf=[(10.0, 10.0 + 2 * blocks + 2)], duration=30.0)
    assert rh.vf[0].end_s - rh.vf[0].start_s == pytest.approx(seconds)
    assert "ventricular_fibrillation" in types(evaluate(load_rules("monitoring"), rh))     # >= 4 s
    assert "ventricular_fibrillation" in types(evaluate(load_rules("resting"), rh))        # any
    path = tmp_path / "vf6.toml"
    path.write_text(BASE + '[[rule]]\ntype = "ventricular_fibrillation"\nseverity = "critical"\nmin_duration_s = 5.9\n')
    assert ("ventricular_fibrillation" in types(evaluate(load_rules(path), rh))) == (seconds > 5.9)


def test_unreadable_gap_is_not_a_pause() -> None:
    beats = steady(70, 0.5, 10.0)
    beats += [beats[-1] + 6.0] + list(beats[-1] + 6.0 + np.arange(1, 10) * 0.85)
    n = int(round((beats[-1] + 0.5) * FS))
    nb = -(-n // int(2 * FS))
    unread = np.zeros(nb, bool)
    unread[5:8] = True                                   # 10-16 s unreadable (lead off)
    rh = detect_rhythm(np.round(np.asarray(beats) * FS).astype(np.int64), ["N"] * len(beats), FS, n, unread, 2.0)
    for name in BUILTIN:
        assert not evaluate(load_rules(name), rh)


@pytest.mark.parametrize("gap,expected", [(2.9, False), (3.1, True)])
def test_resting_pause_boundary_end_to_end(gap: float, expected: bool) -> None:
    fs = 500.0
    times = list(np.arange(0.5, 5.0, 0.8))
    times += list(times[-1] + gap + np.arange(0, 5.0, 0.8))
    t = np.arange(int((times[-1] + 1.0) * fs)) / fs
    x = np.zeros((t.size, 2))
    for bt in times:
        tt = t - bt
        x[:, 0] += 1.2 * np.exp(-0.5 * (tt / 0.01) ** 2) + 0.15 * np.exp(-0.5 * ((tt + 0.2) / 0.025) ** 2) \
            + 0.3 * np.exp(-0.5 * ((tt - 0.28) / 0.05) ** 2)
    x[:, 1] = 0.6 * x[:, 0]
    x += np.random.default_rng(3).normal(0, 0.01, x.shape)
    result = analyze(Recording(fs=fs, leads=("II", "V1"), signals=x))
    pauses = [a for a in result["alarms"] if a["type"] == "pause"]
    assert bool(pauses) == expected
    if expected:
        assert pauses[0]["evidence"]["rr_s"] == pytest.approx(gap, abs=0.004)
