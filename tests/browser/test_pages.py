"""The pages in a real browser against the real system (API on a loopback port, embedded
analysis): a clinic uploads an ECG, a reader of its county reads, edits and signs it, the
clinic downloads the PDF. Debian's Chromium is driven by Playwright; no browser is ever
downloaded. Screenshots go to tests/browser/artifacts/.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Iterator

import pytest

from conftest import SAMPLE_DATA, wait_for
from telediag.network import add_user
from telediag.web.routes.pages import STATIC_URL

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
PASSWORD = "browser test password"
SCP_ECG = SAMPLE_DATA / "ecg-formats" / "scp-ecg" / "Example.scp"  # 12 leads, 500 Hz, 10 s
PHILIPS_STEMI = SAMPLE_DATA / "ecg-formats" / "philips-xml" / "129DYPRG.XML"  # raises an acute MI alarm
HOLTER = [SAMPLE_DATA / "wfdb" / f"mitdb119_300s.{ext}" for ext in ("hea", "dat")]
# The pages' own colours: grid lines are pink/red (green channel well above 100), the trace black.
DARK = 100

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def site(api):
    """The conftest network (Prefecture Center > County A > Township A1, A2) with a clinic
    user of Township A1, a reader of County A and the network's administrator."""
    network, base = api
    system = network.system
    add_user(system.db, system.vault, "clinic-a1", PASSWORD, "clinic", "Township A1", (), "Township A1 nurse")
    add_user(system.db, system.vault, "reader-a", PASSWORD, "reader", "County A", ("ecg", "imaging"), "王医生")
    add_user(system.db, system.vault, "netadmin", PASSWORD, "network_admin", "Prefecture Center")
    return base


class Session:
    """One person's browser context; records every request URL and every script error."""

    def __init__(self, browser, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1600, "height": 1000}, base_url=base)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def login(self, username: str, password: str = PASSWORD, then: str = "/") -> None:
        self.page.goto(then)
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        with self.page.expect_navigation():
            self.page.click("#login-form button[type=submit]")

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def check_clean(self) -> None:
        """Nothing left the loopback API, and no script failed."""
        outside = [u for u in self.requests if not u.startswith(self.base + "/")]
        assert not outside, f"requests outside {self.base}: {outside}"
        assert not self.errors, self.errors
        self.context.close()


def upload(clinic: Session, files: list[Path]) -> int:
    page = clinic.page
    page.set_input_files("#upload-files", [str(f) for f in files])
    page.click("#upload-form button[type=submit]")
    status = page.wait_for_selector("#upload-status:is(.ok, .error)")
    assert "ok" in status.get_attribute("class"), status.inner_text()
    return int(page.get_attribute("#upload-status", "data-case-ids").split(",")[0])


def wait_analysed(session: Session, case_id: int) -> None:
    def analysed() -> bool:
        r = session.page.request.get(f"/api/v1/cases/{case_id}")
        return r.ok and r.json()["status"] == "analysed"

    wait_for(analysed, timeout=90, interval=0.5)


def canvas_ink(page) -> dict[str, int]:
    """Dark (trace) pixels of the ECG canvas and how many pixel columns hold one."""
    return page.eval_on_selector(".ecg-canvas", f"""c => {{
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        const cols = new Set(); let dark = 0;
        for (let i = 0; i < d.length; i += 4) {{
            if (d[i] < {DARK} && d[i + 1] < {DARK} && d[i + 2] < {DARK}) {{ dark++; cols.add((i / 4) % c.width); }}
        }}
        return {{dark, columns: cols.size, width: c.width}};
    }}""")


def open_case(reader: Session, case_id: int) -> dict[str, str]:
    page = reader.page
    page.click(f'.queue-item[data-case-id="{case_id}"]')
    page.wait_for_selector('.ecg-canvas:not([data-samples-drawn="0"])')
    return page.eval_on_selector(".ecg-canvas", "c => ({...c.dataset})")


def test_clinic_uploads_reader_signs_clinic_downloads(browser, site) -> None:
    base = site
    clinic = Session(browser, base)
    clinic.page.goto("/clinic")
    assert clinic.page.url == f"{base}/login?next=%2Fclinic"
    clinic.screenshot("login")

    # a wrong password comes back with a message; the right one lands on the page asked for
    clinic.login("clinic-a1", "wrong password", then="/login?next=%2Fclinic")
    assert "error=" in clinic.page.url and clinic.page.inner_text("#login-error").strip()
    clinic.login("clinic-a1", then="/login?next=%2Fclinic")
    assert clinic.page.url == f"{base}/clinic"
    assert "Township A1" in clinic.page.inner_text("header")

    # the language toggle switches the text and is remembered
    assert clinic.page.inner_text("#upload-card h2") == "上传心电图"
    clinic.page.click("#lang-toggle")
    assert clinic.page.inner_text("#upload-card h2") == "Upload an ECG"
    clinic.page.reload()
    assert clinic.page.inner_text("#upload-card h2") == "Upload an ECG"

    case_id = upload(clinic, [SCP_ECG])
    clinic.page.wait_for_selector(f'#cases tr[data-case-id="{case_id}"]')
    wait_analysed(clinic, case_id)

    reader = Session(browser, base)
    reader.login("reader-a")
    assert reader.page.url == f"{base}/reader"
    reader.page.wait_for_selector(f'.queue-item[data-case-id="{case_id}"]')
    assert reader.page.get_attribute(".queue-item >> nth=0", "data-case-id") == str(case_id)
    assert "Township A1" in reader.page.inner_text(".queue-item >> nth=0")

    drawn = open_case(reader, case_id)
    assert reader.page.url == f"{base}/reader/cases/{case_id}"
    assert drawn["layout"] == "3x4+II" and drawn["leadsDrawn"] == "12"
    assert drawn["grid"] == "25mm/s,10mm/mV"
    assert int(drawn["samplesDrawn"]) >= 12 * 1250 + 5000  # 12 leads x 2.5 s + the 10 s rhythm strip at 500 Hz
    assert int(drawn["beatsMarked"]) > 5
    ink = canvas_ink(reader.page)
    assert ink["dark"] > 5000, ink
    assert ink["columns"] > 0.8 * ink["width"], ink  # the trace runs across the whole strip
    reader.screenshot("reader-workstation")

    # gain control, and the caliper: 20 mm dragged at 25 mm/s is 800 ms
    reader.page.select_option('[data-ctl="gain"]', "20")
    assert reader.page.get_attribute(".ecg-canvas", "data-grid") == "25mm/s,20mm/mV"
    ppm = float(drawn["pxPerMm"]) / reader.page.evaluate("devicePixelRatio")
    box = reader.page.locator(".ecg-overlay").bounding_box()
    x0, y0 = box["x"] + 100, box["y"] + 200
    reader.page.mouse.move(x0, y0)
    reader.page.mouse.down()
    reader.page.mouse.move(x0 + 20 * ppm, y0, steps=4)
    reader.page.mouse.up()
    assert abs(float(reader.page.get_attribute(".ecg-overlay", "data-caliper-ms")) - 800) < 5
    assert "75 bpm" in reader.page.inner_text(".caliper-readout")

    # edit the proposal: add a statement by searching, remove one, write a conclusion, sign
    proposed = reader.page.locator("#chosen-statements li[data-code]").evaluate_all("ls => ls.map(l => l.dataset.code)")
    reader.page.fill("#statement-search", "LVH")
    reader.page.click('.statement-results .pick[data-code="LVH"]')
    if proposed:
        reader.page.click(f'#chosen-statements li[data-code="{proposed[0]}"] .remove')
    chosen = reader.page.locator("#chosen-statements li[data-code]").evaluate_all("ls => ls.map(l => l.dataset.code)")
    assert "LVH" in chosen and (not proposed or proposed[0] not in chosen)
    reader.page.fill("#conclusion", "窦性心律，左心室肥厚。")
    reader.page.click("#btn-save")
    reader.page.wait_for_selector("#report-status.ok")
    reader.page.click("#btn-sign")
    reader.page.wait_for_selector("#signature:not([hidden])")
    assert re.fullmatch(r"[0-9a-f]{64}", reader.page.inner_text(".sig-sha256").strip())
    assert len(base64.b64decode(reader.page.inner_text(".sig-signature").strip())) == 64  # Ed25519
    assert reader.page.is_disabled("#conclusion") and reader.page.is_visible("#btn-amend")
    reader.screenshot("report-signed")

    report = reader.page.request.get(f"/api/v1/cases/{case_id}/report").json()
    assert report["state"] == "signed" and report["statements"] == chosen
    assert report["conclusion"] == "窦性心律，左心室肥厚。"

    # the signed case left the queue and is under the recent ones; an amendment is version 2
    reader.page.click('#queue-tabs [data-list="recent"]')
    reader.page.wait_for_selector(f'.queue-item.reported[data-case-id="{case_id}"]')
    reader.page.click("#btn-amend")
    reader.page.wait_for_selector("#amend-box:not([hidden])")
    reader.page.fill("#conclusion", "窦性心律，左心室肥厚，电轴左偏。")
    reader.page.fill("#amend-reason", "axis omitted")
    reader.page.click("#btn-amend-sign")
    reader.page.wait_for_selector("#report-status.ok")
    assert reader.page.inner_text(".sig-version").strip() == "2"
    amended = reader.page.request.get(f"/api/v1/cases/{case_id}/report").json()
    assert amended["version"] == 2 and amended["replaces"] == 1 and amended["conclusion"].endswith("电轴左偏。")

    # back at the clinic: the report is there (live, without a reload) and its PDF downloads
    link = clinic.page.wait_for_selector(f'#cases tr[data-case-id="{case_id}"] a.pdf-link', timeout=20000)
    pdf = clinic.page.request.get(link.get_attribute("href"))
    assert pdf.ok and pdf.headers["content-type"].startswith("application/pdf")
    assert pdf.body().startswith(b"%PDF")
    clinic.page.click(f'#cases tr[data-case-id="{case_id}"] button.show-report')
    detail = clinic.page.wait_for_selector(f'tr[data-report-of="{case_id}"]')
    assert "电轴左偏" in detail.inner_text() and "LVH" in detail.inner_text()
    clinic.screenshot("clinic")
    # the clinic confirms it has the (amended) report: recorded once, for version 2
    clinic.page.click(f'#cases tr[data-case-id="{case_id}"] button.ack-report')
    clinic.page.wait_for_selector(f'#cases tr[data-case-id="{case_id}"] .report-acked')
    acked = clinic.page.request.get(f"/api/v1/cases/{case_id}/report").json()
    assert acked["version"] == 2 and acked["acknowledged_by"] == "clinic-a1"

    clinic.check_clean()
    reader.check_clean()


def test_long_recording_is_paged(browser, site) -> None:
    clinic = Session(browser, site)
    clinic.login("clinic-a1")
    case_id = upload(clinic, HOLTER)  # a WFDB record: .hea and .dat together
    wait_analysed(clinic, case_id)

    reader = Session(browser, site)
    reader.login("reader-a")
    reader.page.wait_for_selector(f'.queue-item[data-case-id="{case_id}"]')
    drawn = open_case(reader, case_id)
    assert drawn["layout"] == "strips" and drawn["windowStart"] == "0"
    reader.page.wait_for_selector(".ecg-overview")

    reader.page.click(".nav-next")
    reader.page.wait_for_selector('.ecg-canvas[data-window-start="10"]')
    box = reader.page.locator(".ecg-overview").bounding_box()
    reader.page.mouse.click(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
    reader.page.wait_for_selector('.ecg-canvas:not([data-window-start="10"])')
    assert float(reader.page.get_attribute(".ecg-canvas", "data-window-start")) > 20
    assert reader.page.get_attribute(".ecg-overview", "data-window-start") == \
        reader.page.get_attribute(".ecg-canvas", "data-window-start")

    # every window was fetched on its own: never more than 10 s at a time
    windows = [u for u in reader.requests if "/waveform?" in u]
    assert len(windows) >= 3 and all("seconds=10" in u for u in windows)
    clinic.check_clean()
    reader.check_clean()


def test_critical_alarm_reaches_the_queue_and_the_clinic_acknowledges_it(browser, site) -> None:
    clinic = Session(browser, site)
    clinic.login("clinic-a1")
    case_id = upload(clinic, [PHILIPS_STEMI])
    wait_analysed(clinic, case_id)

    reader = Session(browser, site)
    reader.login("reader-a")
    item = reader.page.wait_for_selector(f'.queue-item[data-case-id="{case_id}"]')
    assert item.get_attribute("data-priority") == "critical"
    assert item.query_selector(".alarm-chip.sev-critical")
    drawn = open_case(reader, case_id)
    assert int(drawn["alarmsMarked"]) >= 1

    row = clinic.page.wait_for_selector(f'#alarms tr.open:has-text("#{case_id}")', timeout=20000)
    row.query_selector("button.ack").click()
    done = clinic.page.wait_for_selector(f'#alarms tr.acknowledged:has-text("#{case_id}")')
    assert "clinic-a1" in done.inner_text()
    clinic.check_clean()
    reader.check_clean()


def test_previous_ecg_opens_beside_the_current_one(browser, site, tmp_path) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    # the same patient recorded again later: a copy with its own study, series and instance
    later = pydicom.dcmread(SAMPLE_DATA / "dicom" / "waveform_ecg.dcm")
    later.StudyInstanceUID, later.SeriesInstanceUID = generate_uid(), generate_uid()
    later.SOPInstanceUID = later.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    later.save_as(tmp_path / "later.dcm")

    clinic = Session(browser, site)
    clinic.login("clinic-a1")
    first = upload(clinic, [SAMPLE_DATA / "dicom" / "waveform_ecg.dcm"])
    second = upload(clinic, [tmp_path / "later.dcm"])
    wait_analysed(clinic, first)
    wait_analysed(clinic, second)

    reader = Session(browser, site)
    reader.login("reader-a", then=f"/login?next=%2Freader%2Fcases%2F{second}")
    assert reader.page.url == f"{site}/reader/cases/{second}"  # a link to a case opens it
    reader.page.wait_for_selector('#viewer-slot .ecg-canvas:not([data-samples-drawn="0"])')

    reader.page.select_option("#previous-select", str(first))
    reader.page.wait_for_selector('#compare-viewer .ecg-canvas:not([data-samples-drawn="0"])')
    assert reader.page.get_attribute("#compare-viewer .ecg-canvas", "data-leads-drawn") == "12"
    assert f"#{first}" in reader.page.inner_text("#compare-title")
    clinic.check_clean()
    reader.check_clean()


def test_imaging_case_is_viewed_in_its_windows_and_reported(browser, site, api) -> None:
    import httpx

    network, _ = api
    r = httpx.post(f"{site}/api/v1/dicom", headers={"X-API-Key": network.api_key},
                   files=[("files", ("ct.dcm", (SAMPLE_DATA / "dicom" / "CT_small.dcm").read_bytes()))])
    assert r.status_code == 201, r.text
    case_id = r.json()["objects"][0]["case_id"]

    reader = Session(browser, site)
    reader.login("reader-a")
    reader.page.wait_for_selector(f'.queue-item[data-case-id="{case_id}"]').click()
    canvas = reader.page.wait_for_selector('.image-canvas[data-image-loaded="true"]')
    assert "CT 128×128" in reader.page.inner_text(".imaging-facts")
    grey = "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).reduce((a, b) => a + b, 0)"
    default = canvas.evaluate(grey)

    # a CT preset is rendered by the server in Hounsfield units, as is a window dragged on the image
    reader.page.select_option(".wl-presets", "ct:lung")
    reader.page.wait_for_selector('.image-canvas[data-window="-600,1500"]')
    assert canvas.evaluate(grey) != default
    assert any("wc=-600" in u and "ww=1500" in u for u in reader.requests)
    box = canvas.bounding_box()
    reader.page.mouse.move(box["x"] + 20, box["y"] + 20)
    reader.page.mouse.down()
    reader.page.mouse.move(box["x"] + 120, box["y"] + 20, steps=5)
    reader.page.mouse.up()
    reader.page.wait_for_function("() => { const w = document.querySelector('.image-canvas').dataset.window;"
                                  " return w && Number(w.split(',')[1]) > 1500; }")

    # the report is a findings / impression pair: no statement picker, no measurements
    assert reader.page.is_visible("#findings") and reader.page.is_hidden("#chosen-statements")
    assert reader.page.inner_text('label[for="conclusion"]') == "诊断意见"
    reader.page.fill("#findings", "右下肺实变。")
    reader.page.fill("#conclusion", "社区获得性肺炎。")
    reader.page.click("#btn-sign")
    reader.page.wait_for_selector("#signature:not([hidden])")
    report = reader.page.request.get(f"/api/v1/cases/{case_id}/report").json()
    assert (report["state"], report["findings"], report["conclusion"]) == ("signed", "右下肺实变。", "社区获得性肺炎。")
    reader.screenshot("imaging-report-signed")
    reader.check_clean()


def test_pages_need_a_session_and_the_right_role(browser, site) -> None:
    import httpx

    r = httpx.get(f"{site}/reader/cases/1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Freader%2Fcases%2F1"
    assert "default-src 'self'" in httpx.get(f"{site}/login").headers["content-security-policy"]
    # Assets live under their content's digest, cached for good: a new release is a new URL.
    assert httpx.get(f"{site}/static/ecg.js").status_code == 404
    script = httpx.get(f"{site}{STATIC_URL}/ecg.js")
    assert "javascript" in script.headers["content-type"]
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert re.fullmatch(r"/static/[0-9a-f]{12}", STATIC_URL)

    clinic = Session(browser, site)
    clinic.login("clinic-a1")
    assert clinic.page.url == f"{site}/clinic"
    response = clinic.page.goto("/reader")
    assert response.status == 403
    response = clinic.page.goto("/admin")
    assert response.status == 403

    # logout ends the session: the page sends the browser to login again
    clinic.page.goto("/clinic")
    with clinic.page.expect_navigation():
        clinic.page.click("#logout")
    assert clinic.page.url.startswith(f"{site}/login")
    clinic.page.goto("/clinic")
    assert clinic.page.url.startswith(f"{site}/login")
    clinic.check_clean()


def test_admin_adds_a_device_and_a_user(browser, site) -> None:
    admin = Session(browser, site)
    admin.login("netadmin")
    page = admin.page
    assert page.url == f"{site}/admin"
    page.wait_for_selector("#sites tbody tr")
    assert "County A" in page.inner_text("#sites")

    page.click('[data-tab="devices"]')
    page.fill('#device-form [name="name"]', "cart-a1-2")
    page.select_option('#device-form [name="site"]', "Township A1")
    page.fill('#device-form [name="ae_title"]', "CART12")
    page.click("#device-form button[type=submit]")
    page.wait_for_selector('#devices tr[data-device="cart-a1-2"]')
    key = page.inner_text("#device-key-value").strip()
    assert len(key) > 20
    page.reload()  # shown once: gone after a reload
    assert page.is_hidden("#device-key")

    page.click('[data-tab="users"]')
    page.fill('#user-form [name="username"]', "reader-a2")
    page.fill('#user-form [name="display_name"]', "李医生")
    page.fill('#user-form [name="password"]', PASSWORD)
    page.select_option('#user-form [name="role"]', "reader")
    page.select_option('#user-form [name="site"]', "County A")
    page.check('#user-form [name="qualified"][value="ecg"]')
    page.click("#user-form button[type=submit]")
    row = page.wait_for_selector('#users tr[data-username="reader-a2"]')
    assert "李医生" in row.inner_text()
    page.on("dialog", lambda d: d.accept())
    page.click('#users tr[data-username="reader-a2"] button.disable')
    page.wait_for_selector('#users tr[data-username="reader-a2"]:not(:has(button.disable))')
    admin.check_clean()
