// The clinic page: the site's cases and where each stands, its critical-value alarms (to
// acknowledge), the signed reports as PDF, and the upload of an ECG recorded here.
import { api, t, localized, el, fmtTime, patientText, errorText, toast, poll, alarmStream, setBusy } from "./common.js";

const POLL_MS = 5000;
const CASES_SHOWN = 200;

const $ = (id) => document.getElementById(id);
let cases = [];
let alarms = [];
let reported = null; // ids of cases with a signed report at the last refresh (null before the first)
const shown = new Map(); // case id -> its signed report, for the cases whose report is unfolded
let catalog = null; // statement code -> {en, zh}

function caseState(c) {
  if (c.review_state === "reported") return t("state.reported");
  if (c.status === "analysis_failed") return t("state.analysisFailed");
  if (c.claimed_by) return t("state.reading", { who: c.claimed_by });
  if (c.status === "received") return t("state.received");
  return t("state.waiting", { site: c.routed_to_name ?? "" });
}

/** The signed report under its case's row: statements, conclusion, who signed when. */
function reportRow(c) {
  const r = shown.get(c.case_id);
  const text = (code) => (catalog?.get(code) ? localized(catalog.get(code).en, catalog.get(code).zh) : "");
  return el("tr", { class: "report-detail", dataset: { reportOf: String(c.case_id) } }, el("td", { colspan: "6" },
    el("ol", {}, r.statements.map((code) => el("li", {}, el("span", { class: "code" }, code), " ", text(code)))),
    r.conclusion ? el("p", { class: "conclusion" }, r.conclusion) : null,
    el("p", { class: "muted small" }, t("cases.signedBy", { who: r.signed_by ?? "", time: fmtTime(r.signed_at), version: r.version }))));
}

/** The clinic confirms it has the signed version it was shown (a later amendment needs its own). */
function receipt(c) {
  const r = c.report;
  if (!r) return null;
  if (r.acknowledged_at) {
    return el("div", { class: "muted small report-acked" }, t("cases.ackedBy", { who: r.acknowledged_by, time: fmtTime(r.acknowledged_at) }));
  }
  return el("div", {}, el("span", { class: "badge unacked" }, t("cases.unacked")), " ",
    el("button", { type: "button", class: "ack-report", on: { click: async (ev) => {
      setBusy(ev.target, true);
      try {
        await api(`/api/v1/cases/${c.case_id}/report/ack`, { method: "POST", json: { version: r.version } });
        refreshNow();
      } catch (err) {
        toast(errorText(err), "error");
      } finally {
        setBusy(ev.target, false);
      }
    } } }, t("cases.ack")));
}

async function toggleReport(caseId) {
  if (shown.has(caseId)) {
    shown.delete(caseId);
  } else {
    if (!catalog) catalog = new Map(((await api("/api/v1/statements")).statements ?? []).map((s) => [s.code, s]));
    shown.set(caseId, await api(`/api/v1/cases/${caseId}/report`));
  }
  renderCases();
}

function renderCases() {
  $("cases").tBodies[0].replaceChildren(...cases.flatMap((c) => [el("tr", {
    class: `prio-${c.priority} ${c.review_state ?? ""}`, dataset: { caseId: String(c.case_id) } },
  el("td", {}, `#${c.case_id}`),
  el("td", {}, fmtTime(c.received_at)),
  el("td", {}, patientText(c.patient)),
  el("td", {}, el("span", { class: `prio prio-${c.priority}` }, t(`priority.${c.priority}`))),
  el("td", { class: "state" }, caseState(c),
    c.alarms?.length ? el("div", {}, c.alarms.map((a) =>
      el("span", { class: `alarm-chip sev-${a.severity} ${a.state}` }, localized(a.text, a.text_zh) || a.type))) : null),
  el("td", {}, c.review_state === "reported" ? [
    el("button", { type: "button", class: "show-report",
      on: { click: () => toggleReport(c.case_id).catch((err) => toast(errorText(err), "error")) } },
    t(shown.has(c.case_id) ? "cases.hide" : "cases.show")), " ",
    el("a", { class: "pdf-link", href: `/api/v1/cases/${c.case_id}/report.pdf`, download: `report-${c.case_id}.pdf` }, t("cases.pdf")),
    receipt(c),
  ] : "")),
  shown.has(c.case_id) ? reportRow(c) : null].filter(Boolean)));
  $("cases-empty").hidden = cases.length > 0;
}

function renderAlarms() {
  $("alarms").tBodies[0].replaceChildren(...alarms.map((a) => el("tr", {
    class: `sev-${a.severity} ${a.state}`, dataset: { alarmId: String(a.id) } },
  el("td", {}, fmtTime(a.raised_at)),
  el("td", {}, `#${a.case_id}`),
  el("td", {}, localized(a.text, a.text_zh) || a.type),
  el("td", {}, a.state === "acknowledged"
    ? t("alarms.ackedBy", { who: a.acknowledged_by ?? "", time: fmtTime(a.acknowledged_at) })
    : t("alarms.open")),
  el("td", {}, a.state === "open"
    ? el("button", { type: "button", class: "primary ack", on: { click: (e) => acknowledge(a.id, e.target) } }, t("alarms.ack"))
    : ""))));
  $("alarms-empty").hidden = alarms.length > 0;
}

async function acknowledge(alarmId, button) {
  setBusy(button, true);
  try {
    await api(`/api/v1/alarms/${alarmId}/ack`, { method: "POST" });
    await refresh();
  } catch (err) {
    toast(errorText(err), "error");
    setBusy(button, false);
  }
}

async function refresh() {
  const [caseBody, alarmList] = await Promise.all([api(`/api/v1/cases?limit=${CASES_SHOWN}`), api("/api/v1/alarms")]);
  cases = caseBody.items;
  alarms = alarmList;
  // Tell the clinic when a report comes back (but not about those already there on opening).
  const now = new Set(cases.filter((c) => c.review_state === "reported").map((c) => c.case_id));
  if (reported) for (const id of now) if (!reported.has(id)) toast(t("cases.reportArrived", { id }));
  reported = now;
  renderCases();
  renderAlarms();
}

/** A WFDB record is several files (.hea plus signals) and has its own route; every other
 * format is one file per recording. */
async function upload(e) {
  e.preventDefault();
  const files = [...$("upload-files").files];
  if (!files.length) return;
  const wfdb = files.some((f) => f.name.toLowerCase().endsWith(".hea"));
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  if ($("upload-rules").value) form.append("rules", $("upload-rules").value);
  const button = e.submitter ?? $("upload-form").querySelector("button");
  const status = $("upload-status");
  setBusy(button, true);
  status.className = "status";
  status.textContent = t("upload.sending");
  delete status.dataset.caseIds;
  try {
    const body = await api(wfdb ? "/api/v1/ecg/wfdb" : "/api/v1/ecg", { method: "POST", form });
    const stored = body.objects ?? [body];
    status.className = "status ok";
    status.textContent = stored.map((o) => t(`upload.${o.status}`, { id: o.case_id, file: o.file ?? files[0].name }, o.status)).join("; ");
    status.dataset.caseIds = stored.map((o) => o.case_id).join(",");
    $("upload-form").reset();
    await refresh();
  } catch (err) {
    status.className = "status error";
    status.textContent = errorText(err);
  } finally {
    setBusy(button, false);
  }
}

$("upload-form").addEventListener("submit", upload);
document.addEventListener("langchange", () => {
  renderCases();
  renderAlarms();
});

const refreshNow = poll(refresh, POLL_MS);
alarmStream((kind, data) => {
  if (kind === "alarm") toast(t("alarm.new", { text: localized(data.text, data.text_zh), case: data.case_id }), "error");
  refreshNow();
});
