"""The review stage over real HTTP: logins, who sees what, the queue and claims, drafts,
signatures that verify, immutability and amendments, the PDF, escalation by deadline, and
the audit trail's hash chain."""

from __future__ import annotations

import base64
import hashlib
import io
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from pypdf import PdfReader

from alarm_fixtures import normal_ecg, pause_ecg
from review_fixtures import PASSWORD, ReviewWorld, rebuilt_digest, review_world  # noqa: F401 - fixture
from services import run_cli, telediag_env
from telediag.network import user_by_token, verify_signature

pytest_plugins = ["services"]


def test_login_gives_a_bearer_token_and_refuses_wrong_passwords(review_world: ReviewWorld) -> None:
    w = review_world
    r = w.call("POST", "/api/v1/auth/login", json={"username": "ra", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0 and len(body["access_token"]) > 30
    me = w.call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert (me["username"], me["role"], me["site_name"], me["qualified"]) == ("ra", "reader", "County A", ["ecg"])
    assert w.call("POST", "/api/v1/auth/login", json={"username": "ra", "password": "wrong"}).status_code == 401
    assert w.call("POST", "/api/v1/auth/login", json={"username": "nobody", "password": "x"}).status_code == 401
    assert w.call("GET", "/api/v1/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    w.call("POST", "/api/v1/auth/logout", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert w.call("GET", "/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}).status_code == 401


def test_repeated_failures_lock_the_account(review_world: ReviewWorld) -> None:
    w = review_world
    codes = [w.call("POST", "/api/v1/auth/login", json={"username": "c2", "password": f"guess{i}"}).status_code
             for i in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    locked = w.call("POST", "/api/v1/auth/login", json={"username": "c2", "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 60  # even the right password


@pytest.mark.parametrize("review_world", [{"login_rate_per_minute": 3}], indirect=True)
def test_login_attempts_from_one_address_are_rate_limited(review_world: ReviewWorld) -> None:
    w = review_world
    codes = [w.call("POST", "/api/v1/auth/login", json={"username": "ra", "password": PASSWORD}).status_code
             for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_each_role_sees_only_its_part_of_the_network(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(normal_ecg())
    w.analysed(case_id)
    path = f"/api/v1/cases/{case_id}"
    assert w.call("GET", path, user="c1").status_code == 200          # the clinic that sent it
    assert w.call("GET", path, key=w.keys["cart-a1"]).status_code == 200  # the cart that sent it
    assert w.call("GET", path, user="c2").status_code == 404          # another township
    assert w.call("GET", path, key=w.keys["cart-a2"]).status_code == 404
    assert w.call("GET", path, user="rb").status_code == 404          # another county's reader
    assert w.call("GET", path, user="ra").status_code == 200          # its county's reader
    assert w.call("GET", path, user="rp").status_code == 200          # the prefecture (quality control)
    assert w.call("GET", path).status_code == 401

    in_queue = lambda user: [i["case_id"] for i in w.call("GET", "/api/v1/queue", user=user).json()["items"]]  # noqa: E731
    assert case_id in in_queue("ra")
    assert case_id not in in_queue("rb") and case_id not in in_queue("rp")
    assert w.call("GET", "/api/v1/queue", user="c1").status_code == 403
    assert w.call("GET", "/api/v1/queue", key=w.keys["cart-a1"]).status_code == 403
    assert [i["case_id"] for i in w.call("GET", "/api/v1/cases", user="c1").json()["items"]] == [case_id]
    assert w.call("GET", "/api/v1/cases", user="c2").json()["items"] == []
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="rb").status_code == 404
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="c1").status_code == 403
    assert w.call("GET", "/api/v1/audit", user="ra").status_code == 403


def test_queue_puts_critical_cases_first(review_world: ReviewWorld) -> None:
    w = review_world
    routine = w.upload(normal_ecg())
    critical = w.upload(pause_ecg())
    w.analysed(routine), w.analysed(critical)
    items = w.call("GET", "/api/v1/queue", user="ra").json()["items"]
    assert [i["case_id"] for i in items] == [critical, routine]
    assert items[0]["priority"] == "critical" and items[0]["alarms"]
    assert items[0]["deadline_at"] < items[1]["deadline_at"]
    assert items[0]["site_name"] == "Township A1" and items[0]["routed_to_name"] == "County A"


def test_claim_draft_sign_amend_and_verify(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(normal_ecg())
    w.analysed(case_id)
    base = f"/api/v1/cases/{case_id}"

    proposal = w.call("GET", f"{base}/report", user="ra").json()
    assert proposal["version"] == 0 and proposal["state"] == "proposed" and proposal["statements"]
    assert proposal["measurements"]["heart_rate_bpm"] > 0
    body = {"statements": proposal["statements"], "conclusion": "窦性心律，正常心电图。"}
    assert w.call("PUT", f"{base}/report", user="ra", json=body).status_code == 409  # not claimed

    assert w.call("POST", f"{base}/claim", user="ra").status_code == 200
    taken = w.call("POST", f"{base}/claim", user="ra2")
    assert taken.status_code == 409 and "ra" in taken.json()["detail"]
    assert w.call("PUT", f"{base}/report", user="ra2", json=body).status_code == 409
    assert w.call("PUT", f"{base}/report", user="ra", json={**body, "statements": ["NO_SUCH"]}).status_code == 422
    draft = w.call("PUT", f"{base}/report", user="ra", json=body)
    assert draft.status_code == 200 and draft.json()["state"] == "draft" and draft.json()["version"] == 1
    assert w.call("GET", f"{base}/report", user="c1").status_code == 404  # a draft is the reader's own

    signed = w.call("POST", f"{base}/report/sign", user="ra")
    assert signed.status_code == 200, signed.text
    s = signed.json()
    assert (s["version"], s["signed_by"]) == (1, "ra")
    key = w.call("GET", "/api/v1/users/ra/public-key").json()
    assert key["algorithm"] == "ed25519"
    # Anyone can rebuild the canonical content (docs/review-api.md) and check digest and signature.
    case = w.call("GET", base, user="c1").json()
    digest = rebuilt_digest(case, body["statements"], body["conclusion"], proposal["measurements"], s)
    assert digest.hex() == s["sha256"]
    assert verify_signature(key["public_key"], digest, s["signature"])
    assert not verify_signature(key["public_key"], hashlib.sha256(b"other").digest(), s["signature"])

    assert w.call("PUT", f"{base}/report", user="ra", json=body).status_code == 409  # signed is immutable
    assert w.call("POST", f"{base}/report/sign", user="ra").status_code == 409
    assert case["review"]["review_state"] == "reported" and case["review"]["claimed_by"] is None
    assert w.call("GET", f"{base}/report", user="c1").json()["sha256"] == s["sha256"]

    assert w.call("POST", f"{base}/report/amend", user="ra", json={**body, "reason": "typo"}).status_code == 409
    assert w.call("POST", f"{base}/claim", user="ra").status_code == 200
    amended = w.call("POST", f"{base}/report/amend", user="ra",
                     json={**body, "conclusion": "窦性心律。", "reason": "结论更正"})
    assert amended.status_code == 200 and amended.json()["version"] == 2
    latest = w.call("GET", f"{base}/report", user="c1").json()
    assert (latest["version"], latest["replaces"], latest["conclusion"]) == (2, 1, "窦性心律。")

    pdf = w.call("GET", f"{base}/report.pdf", user="c1")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert amended.json()["sha256"] in text.replace("\n", "").replace(" ", "")
    assert w.call("GET", f"{base}/report.pdf", user="c2").status_code == 404


@pytest.mark.parametrize("review_world", [{"signature_algorithm": "sm2"}], indirect=True)
def test_a_network_on_national_cryptography_signs_with_sm2(review_world: ReviewWorld, tmp_path) -> None:
    w = review_world
    case_id = w.upload(normal_ecg())
    w.analysed(case_id)
    base = f"/api/v1/cases/{case_id}"
    proposal = w.call("GET", f"{base}/report", user="ra").json()
    body = {"statements": proposal["statements"], "conclusion": "窦性心律。"}
    assert w.call("POST", f"{base}/claim", user="ra").status_code == 200
    assert w.call("PUT", f"{base}/report", user="ra", json=body).status_code == 200
    s = w.call("POST", f"{base}/report/sign", user="ra").json()
    key = w.call("GET", "/api/v1/users/ra/public-key").json()
    assert s["algorithm"] == key["algorithm"] == "sm2" and s["public_key"] == key["public_key"]
    digest = rebuilt_digest(w.call("GET", base, user="c1").json(), body["statements"], body["conclusion"],
                            proposal["measurements"], s)
    assert digest.hex() == s["sha256"] and verify_signature(key["public_key"], digest, s["signature"], "sm2")
    # OpenSSL, given only the published PEM, verifies it (SM2 with SM3, GB/T 35276 default ID).
    (tmp_path / "pub.pem").write_text(key["pem"])
    (tmp_path / "digest").write_bytes(digest)
    (tmp_path / "sig").write_bytes(base64.b64decode(s["signature"]))
    assert subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "digest",
                           "-sigfile", "sig", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678"],
                          cwd=tmp_path, capture_output=True).returncode == 0
    assert w.call("GET", f"{base}/report", user="c1").json()["algorithm"] == "sm2"
    pdf = w.call("GET", f"{base}/report.pdf", user="c1").content
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "sm2 signature" in text and s["sha256"] in text.replace("\n", "").replace(" ", "")


def test_claims_are_leases_one_case_at_a_time(review_world: ReviewWorld) -> None:
    w = review_world
    first, second = w.upload(normal_ecg()), w.upload(pause_ecg())
    assert w.call("POST", f"/api/v1/cases/{first}/claim", user="ra").status_code == 200
    assert w.call("POST", f"/api/v1/cases/{second}/claim", user="ra").status_code == 200
    items = {i["case_id"]: i for i in w.call("GET", "/api/v1/queue", user="ra2").json()["items"]}
    assert items[first]["claimed_by"] is None and items[second]["claimed_by"] == "ra"
    assert w.call("POST", f"/api/v1/cases/{first}/claim", user="ra2").status_code == 200
    assert w.call("POST", f"/api/v1/cases/{first}/release", user="ra").status_code == 409
    assert w.call("POST", f"/api/v1/cases/{first}/release", user="ra2").status_code == 200
    assert w.call("POST", f"/api/v1/cases/{first}/claim", user="ra").status_code == 200


@pytest.mark.parametrize("review_world", [{"claim_lease_s": 1.0}], indirect=True)
def test_an_abandoned_claim_expires(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(normal_ecg())
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="ra").status_code == 200
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="ra2").status_code == 409
    time.sleep(1.2)
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="ra2").status_code == 200


def test_consultation_moves_the_case_to_the_prefecture(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(normal_ecg())
    w.call("POST", f"/api/v1/cases/{case_id}/claim", user="ra")
    moved = w.call("POST", f"/api/v1/cases/{case_id}/consult", user="ra").json()
    assert moved["routed_to_name"] == "Prefecture Center"
    assert case_id in [i["case_id"] for i in w.call("GET", "/api/v1/queue", user="rp").json()["items"]]
    assert case_id not in [i["case_id"] for i in w.call("GET", "/api/v1/queue", user="ra").json()["items"]]
    assert w.call("GET", f"/api/v1/cases/{case_id}", user="ra").status_code == 200  # consulted: still seen
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="ra").status_code == 403
    assert w.call("POST", f"/api/v1/cases/{case_id}/claim", user="rp").status_code == 200


@pytest.mark.parametrize("review_world", [{"deadline_routine_s": 0.5, "deadline_critical_s": 0.5}], indirect=True)
def test_a_case_unclaimed_past_its_deadline_moves_up(review_world: ReviewWorld) -> None:
    w = review_world
    waiting, held = w.upload(normal_ecg()), w.upload(pause_ecg())
    w.call("POST", f"/api/v1/cases/{held}/claim", user="ra")
    time.sleep(0.6)
    assert w.system.review.escalate_overdue() == [waiting]  # the claimed one stays
    assert w.system.review.escalate_overdue() == []          # each case once
    assert [i["case_id"] for i in w.call("GET", "/api/v1/queue", user="rp").json()["items"]] == [waiting]
    entries = w.call("GET", "/api/v1/audit", user="admin", params={"case_id": waiting}).json()["entries"]
    assert entries[0]["action"] == "escalate" and entries[0]["detail"]["reason"] == "deadline"


def test_page_session_cookie_needs_the_csrf_token_to_change_anything(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(normal_ecg())
    with httpx.Client(base_url=w.base, follow_redirects=False) as browser:
        r = browser.post("/login", data={"username": "ra", "password": "wrong"})
        assert r.status_code == 303 and "error" in r.headers["location"]
        r = browser.post("/login", data={"username": "ra", "password": PASSWORD, "next": "//evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/api/v1/queue").status_code == 200
        assert browser.post(f"/api/v1/cases/{case_id}/claim").status_code == 403
        # The page reads the token from its <meta>; this client from the session it belongs to.
        csrf = user_by_token(w.system.db, browser.cookies["telediag_session"]).csrf_token
        assert browser.post(f"/api/v1/cases/{case_id}/claim", headers={"X-CSRF-Token": csrf}).status_code == 200


def test_audit_trail_records_actions_and_detects_tampering(review_world: ReviewWorld) -> None:
    w = review_world
    case_id = w.upload(normal_ecg())
    w.call("GET", f"/api/v1/cases/{case_id}", user="ra")
    w.call("POST", f"/api/v1/cases/{case_id}/claim", user="ra")
    w.call("POST", "/api/v1/auth/login", json={"username": "ra", "password": "bad"})
    entries = w.call("GET", "/api/v1/audit", user="admin", params={"case_id": case_id}).json()["entries"]
    assert [e["action"] for e in entries][:2] == ["claim", "view"]
    assert entries[0]["username"] == "ra" and entries[0]["address"] == "127.0.0.1"
    assert entries[0]["prev_hash"] == entries[1]["hash"] or entries[0]["id"] > entries[1]["id"] + 1
    assert w.call("GET", "/api/v1/audit", user="ca", params={"case_id": case_id}).status_code == 200
    assert w.call("GET", "/api/v1/audit", user="ca").status_code == 403

    env = telediag_env(data_dir=str(w.system.settings.data_dir))
    assert "intact" in run_cli(["audit", "verify"], env)
    victim = entries[0]["id"]
    with sqlite3.connect(w.system.settings.data_dir / "telediag.sqlite3") as conn:
        conn.execute("UPDATE audit_log SET username = 'someone' WHERE id = ?", (victim,))
    verify = subprocess.run([sys.executable, "-m", "telediag.cli", "audit", "verify"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 1 and f"entry {victim}:" in verify.stderr


def test_users_are_added_from_the_cli_with_a_password_on_stdin(review_world: ReviewWorld) -> None:
    w = review_world
    env = telediag_env(data_dir=str(w.system.settings.data_dir))
    run = lambda *args, stdin="": subprocess.run([sys.executable, "-m", "telediag.cli", *args], env=env,  # noqa: E731
                                                 input=stdin, capture_output=True, text=True, timeout=60)
    ok = run("user", "add", "rnew", "--role", "reader", "--site", "County B", "--qualified", "ecg",
             "--password-stdin", stdin="a long password\n")
    assert ok.returncode == 0, ok.stderr
    bad = run("user", "add", "rbad", "--role", "reader", "--site", "Township A1", "--qualified", "ecg",
              "--password-stdin", stdin="a long password\n")
    assert bad.returncode == 2 and "county or prefecture" in bad.stderr
    r = w.call("POST", "/api/v1/auth/login", json={"username": "rnew", "password": "a long password"})
    assert r.status_code == 200 and r.json()["user"]["site_name"] == "County B"
    assert base64.b64decode(w.call("GET", "/api/v1/users/rnew/public-key").json()["public_key"])


def test_a_long_wfdb_record_is_read_window_by_window(review_world: ReviewWorld,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A Holter's windows and overview read ranges of its signal file, never the whole of it
    (issue #11), and answer what the whole decoded record would; the overview is kept."""
    import numpy as np

    from telediag.bench.review import HOLTER_FS, synthetic_holter
    from telediag.ecg.readers import read_wfdb_files

    w = review_world
    files = synthetic_holter(0.2)  # 12 minutes, 3 leads, format 16
    r = w.call("POST", "/api/v1/ecg/wfdb", key=w.keys["cart-a1"], files=[("files", f) for f in files.items()])
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    header = next(o for o in w.analysed(case_id)["objects"] if o["media_type"] == "application/x-wfdb-header")
    whole = read_wfdb_files(files, "holter")
    store, reads = w.system.review.store, []
    for name in ("get", "get_range"):
        def spy(key: str, *args, _real=getattr(store, name), _name=name):
            data = _real(key, *args)
            reads.append((_name, key.rsplit("/", 1)[-1], len(data)))
            return data
        monkeypatch.setattr(store, name, spy)

    base = f"/api/v1/cases/{case_id}/objects/{header['object_id']}"
    for start in (0, 355.5, 715):
        got = w.call("GET", f"{base}/waveform?start={start}&seconds=10", user="ra").json()
        a = int(min(start, whole.duration_s - 10) * HOLTER_FS)
        assert (got["fs"], got["leads"], got["duration_s"]) == (whole.fs, list(whole.leads), whole.duration_s)
        assert got["start_s"] == a / HOLTER_FS and got["seconds"] == 10
        for i, lead in enumerate(whole.leads):
            assert got["signals"][lead] == np.round(whole.signals[a:a + 2500, i], 4).tolist()
    assert ("get", "holter.dat") not in {r[:2] for r in reads}
    assert sum(n for kind, name, n in reads if name == "holter.dat") == 3 * 2500 * 3 * 2  # the windows' bytes

    reads.clear()
    got = w.call("GET", f"{base}/overview?points=1000&lead=V5", user="ra").json()
    x = whole.signals[:, whole.leads.index("V5")]
    edges = np.linspace(0, x.size, 1001).astype(int)
    assert got == {"duration_s": whole.duration_s, "lead": "V5",
                   "min": np.round(np.minimum.reduceat(x, edges[:-1]), 3).tolist(),
                   "max": np.round(np.maximum.reduceat(x, edges[:-1]), 3).tolist()}
    assert ("get", "holter.dat") not in {r[:2] for r in reads}
    reads.clear()
    assert w.call("GET", f"{base}/overview?points=1000&lead=V5", user="ra").json() == got
    assert not [r for r in reads if r[1] == "holter.dat"]  # kept


def test_a_gap_in_the_signal_reaches_the_viewer_as_null(review_world: ReviewWorld, tmp_path) -> None:
    """WFDB's invalid sample (a lead off for a second) is a gap the viewer leaves undrawn: the
    window carries it as JSON null (NaN is not JSON)."""
    import numpy as np
    import wfdb

    w = review_world
    fs = 250
    t = np.arange(10 * fs) / fs
    signal = sum(1.2 * np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in np.arange(0.5, 10, 0.8))
    signal[4 * fs:5 * fs] = np.nan
    wfdb.wrsamp("gap", fs=fs, units=["mV"], sig_name=["II"], p_signal=signal[:, None], fmt=["16"],
                write_dir=str(tmp_path))
    files = [("files", (name, (tmp_path / name).read_bytes())) for name in ("gap.hea", "gap.dat")]
    r = w.call("POST", "/api/v1/ecg/wfdb", key=w.keys["cart-a1"], files=files)
    assert r.status_code == 201, r.text
    view = w.analysed(r.json()["case_id"])
    header = next(o for o in view["objects"] if o["media_type"] == "application/x-wfdb-header")
    got = w.call("GET", f"/api/v1/cases/{view['case_id']}/objects/{header['object_id']}/waveform?start=0&seconds=10",
                 user="ra")
    assert got.status_code == 200, got.text
    values = got.json()["signals"]["II"]
    assert values[4 * fs:5 * fs] == [None] * fs
    drawn = values[:4 * fs] + values[5 * fs:]
    assert None not in drawn and max(drawn) > 1.0
