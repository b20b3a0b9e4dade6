// The reader workstation: the queue on the left (live), the case in the middle (ECG viewer
// or image), the automated analysis and the report form on the right.
import { api, ApiError, t, localized, el, fmtTime, countdown, patientText, errorText, toast, poll, alarmStream, setBusy }
  from "./common.js";
import { EcgViewer } from "./ecg.js";
import { ImageViewer } from "./image.js";
import { StatementPicker, MeasurementsTable, ImagingFields } from "./report.js";

const QUEUE_POLL_MS = 5000;
const RECENT_SHOWN = 50;
// The claim is a lease (15 min by default): claiming again while the case is open keeps it.
const CLAIM_RENEW_MS = 5 * 60 * 1000;

const $ = (id) => document.getElementById(id);
const me = $("who").dataset.username;

const state = {
  list: "queue", // the left pane shows the queue, or the center's recent cases (signed ones, to amend)
  queue: [],
  caseId: null,
  view: null, // GET /api/v1/cases/{id}
  report: null, // GET /api/v1/cases/{id}/report
  claimed: false, // this reader holds the claim
  blocked: null, // why this reader may not claim the case (another reader holds it, another center's)
  amending: false,
  viewer: null,
  compare: null,
  renewTimer: null,
};

const picker = new StatementPicker($("statement-search"), $("statement-results"), $("chosen-statements"));
const measurements = new MeasurementsTable($("measurements"));
const imagingFields = new ImagingFields($("report-form"));
// A signed report filed back into its study (Encapsulated PDF Storage): no image to show.
const REPORT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.104.1";
const isImage = (o) => o.sop_class_uid !== REPORT_SOP_CLASS && o.modality !== "DOC";

// ---------------------------------------------------------------- queue

function queueItem(item) {
  const due = item.review_state === "open" ? countdown(item.deadline_at) : { text: "", overdue: false };
  const claimedBy = item.claimed_by
    ? el("span", { class: `claim ${item.claimed_by === me ? "mine" : "other"}` },
      item.claimed_by === me ? t("queue.mine") : t("queue.claimedBy", { who: item.claimed_by }))
    : null;
  return el("li", {
    class: `queue-item prio-${item.priority} ${item.case_id === state.caseId ? "selected" : ""} ${item.review_state}`,
    dataset: { caseId: String(item.case_id), priority: item.priority },
    tabindex: "0",
    on: {
      click: () => openCase(item.case_id),
      keydown: (e) => e.key === "Enter" && openCase(item.case_id),
    },
  },
  el("div", { class: "line1" },
    el("span", { class: `prio prio-${item.priority}` }, t(`priority.${item.priority}`)),
    el("span", { class: "kind" }, t(`kind.${item.kind}`)),
    el("span", { class: "case-no" }, `#${item.case_id}`),
    item.review_state === "reported" ? el("span", { class: "tag signed" }, t("state.reported")) : null,
    due.text ? el("span", { class: `deadline ${due.overdue ? "overdue" : ""}`, dataset: { deadline: item.deadline_at } }, due.text) : null),
  el("div", { class: "line2" }, el("b", {}, item.site_name ?? ""), " ", patientText(item.patient)),
  item.alarms?.length
    ? el("div", { class: "alarms" }, item.alarms.map((a) =>
      el("span", { class: `alarm-chip sev-${a.severity} ${a.state}` }, localized(a.text, a.text_zh) || a.type)))
    : null,
  el("div", { class: "line3 muted" }, fmtTime(item.received_at),
    item.routed_to_name ? ` → ${item.routed_to_name}` : "", claimedBy ? " " : "", claimedBy));
}

function renderQueue() {
  $("queue").replaceChildren(...state.queue.map(queueItem));
  $("queue-empty").hidden = state.queue.length > 0;
  $("queue-updated").textContent = t("queue.updated", { time: new Date().toLocaleTimeString() });
}

async function loadQueue() {
  const list = state.list;
  const body = await api(list === "queue" ? "/api/v1/queue" : `/api/v1/cases?limit=${RECENT_SHOWN}`);
  if (list !== state.list) return; // the reader switched lists meanwhile
  state.queue = body.items ?? [];
  renderQueue();
}

function tickCountdowns() {
  for (const span of document.querySelectorAll("[data-deadline]")) {
    if (!span.dataset.deadline) continue;
    const due = countdown(span.dataset.deadline);
    span.textContent = due.text;
    span.classList.toggle("overdue", due.overdue);
  }
}

// ---------------------------------------------------------------- case

/** The viewer of a case: its ECG (of a WFDB record's objects, the analysed one) or its images. */
function openViewer(container, caseId, view) {
  const objects = (view.objects ?? []).filter(isImage);
  if (!objects.length) {
    container.replaceChildren(el("p", { class: "muted" }, t("viewer.nothing")));
    return null;
  }
  const viewer = view.kind === "imaging"
    ? new ImageViewer(container, { caseId, objects })
    : new EcgViewer(container, { caseId, objectId: (objects.find((o) => o.analysis) ?? objects[0]).object_id,
      analysis: objects.find((o) => o.analysis)?.analysis });
  viewer.open();
  return viewer;
}

function renderCaseHead() {
  const v = state.view;
  const review = v.review ?? {};
  const due = countdown(review.deadline_at);
  $("case-title").replaceChildren(
    el("span", { class: `prio prio-${v.priority}` }, t(`priority.${v.priority}`)),
    el("b", {}, ` #${v.case_id} `), el("span", {}, t(`kind.${v.kind}`)), " · ",
    el("span", {}, v.site_name ?? ""), " · ", el("span", { class: "patient" }, patientText(v.patient)), " · ",
    el("span", { class: "muted" }, fmtTime(v.received_at)),
    review.deadline_at && review.review_state === "open"
      ? el("span", { class: `deadline ${due.overdue ? "overdue" : ""}`, dataset: { deadline: review.deadline_at } }, due.text)
      : "");
}

function banner(text, kind = "warn") {
  const b = $("case-banner");
  b.hidden = !text;
  b.className = `banner ${kind}`;
  b.textContent = text ?? "";
}

/** An imaging case's header check: each image's size, frames and findings. */
function imagingSummary(box) {
  const images = (state.view.objects ?? []).filter((o) => o.analysis?.imaging);
  if (!images.length) {
    box.replaceChildren(el("p", { class: "muted" }, t("analysis.pending")));
    return;
  }
  box.replaceChildren(el("ul", { class: "episodes imaging-facts" }, images.map((o) => {
    const f = o.analysis.imaging;
    return el("li", { dataset: { objectId: String(o.object_id) } },
      t("analysis.imageText", { modality: f.modality ?? "", columns: f.columns, rows: f.rows, frames: f.frames }),
      f.findings.length
        ? el("ul", {}, f.findings.map((x) => el("li", { class: `sev-${x.severity}`, title: x.code }, x.text)))
        : el("span", { class: "muted" }, ` · ${t("analysis.headerOk")}`));
  })));
}

function analysisSummary() {
  const box = $("analysis-summary");
  if (state.view.kind === "imaging") {
    imagingSummary(box);
    return;
  }
  const analysis = (state.view.objects ?? []).find((o) => o.analysis)?.analysis;
  if (!analysis) {
    box.replaceChildren(el("p", { class: "muted" }, t("analysis.pending")));
    return;
  }
  const rows = [];
  const add = (key, ...value) => rows.push(el("dt", {}, t(key)), el("dd", {}, ...value));
  add("analysis.recording", t("analysis.recordingText", {
    leads: analysis.leads?.length ?? 0, fs: analysis.fs ?? "", s: (analysis.duration_s ?? 0).toFixed(1) }));
  if (analysis.heart_rate_bpm != null) add("analysis.hr", `${Math.round(analysis.heart_rate_bpm)} /min`);
  if (analysis.rhythm?.length) {
    add("analysis.rhythm", el("ul", { class: "episodes" }, analysis.rhythm.map((ep) =>
      el("li", {}, el("a", { href: "#", on: { click: (e) => { e.preventDefault(); state.viewer?.show?.(ep.start_s); } } },
        `${t(`rhythm.${ep.label}`, {}, ep.label)} ${ep.start_s.toFixed(1)}–${ep.end_s.toFixed(1)} s`)))));
  }
  if (analysis.alarms?.length) {
    add("analysis.alarms", el("ul", { class: "episodes" }, analysis.alarms.map((a) =>
      el("li", { class: `sev-${a.severity}` }, el("a", { href: "#", on: { click: (e) => { e.preventDefault(); state.viewer?.show?.(a.start_s); } } },
        localized(a.text, a.text_zh) || a.type)))));
  }
  if (analysis.findings?.length) add("analysis.findings", analysis.findings.map((f) => f.code ?? String(f)).join("; "));
  if (analysis.device_statements?.length) add("analysis.device", analysis.device_statements.join("; "));
  box.replaceChildren(el("dl", {}, rows));
}

function renderPrevious() {
  const previous = (state.view.previous ?? []).filter((p) => (p.kind ?? "ecg") === "ecg");
  $("previous-box").hidden = previous.length === 0;
  $("previous-select").replaceChildren(el("option", { value: "" }, t("compare.none")),
    ...previous.map((p) => el("option", { value: String(p.case_id) }, `#${p.case_id} · ${fmtTime(p.received_at)}`)));
}

async function openCompare(caseId) {
  if (!caseId) {
    closeCompare();
    return;
  }
  const view = await api(`/api/v1/cases/${caseId}`);
  $("compare-slot").hidden = false;
  $("compare-title").textContent = `#${caseId} · ${fmtTime(view.received_at)}`;
  state.compare = openViewer($("compare-viewer"), caseId, view);
}

function closeCompare() {
  $("compare-slot").hidden = true;
  $("compare-viewer").replaceChildren();
  $("previous-select").value = "";
  state.compare = null;
}

// ---------------------------------------------------------------- report form

function signed() {
  return state.report?.state === "signed";
}

/** Which controls apply: editing a draft needs the claim; a signed report is read-only until
 * a reader claims the case again to amend it. */
function renderFormState() {
  const editable = state.claimed && (!signed() || state.amending);
  const open = state.claimed && !signed();
  picker.setEnabled(editable && !imagingFields.imaging);
  measurements.setEnabled(editable);
  imagingFields.setEnabled(editable);
  $("conclusion").disabled = !editable;
  $("amend-box").hidden = !state.amending;
  $("btn-save").hidden = !open;
  $("btn-sign").hidden = !open;
  $("btn-amend").hidden = !signed() || state.amending || Boolean(state.blocked);
  $("btn-amend-sign").hidden = !state.amending;
  $("btn-release").hidden = !state.claimed;
  $("btn-consult").hidden = !open;
  $("report-form").classList.toggle("read-only", !editable);
  renderSignature();
}

function renderSignature() {
  const r = state.report;
  const box = $("signature");
  box.hidden = !signed();
  if (!signed()) return;
  const row = (key, value, cls) => [el("dt", {}, t(key)), el("dd", { class: cls }, value ?? "")];
  box.replaceChildren(
    ...row("sig.version", String(r.version), "sig-version"),
    ...row("sig.by", r.signed_by),
    ...row("sig.at", fmtTime(r.signed_at)),
    ...row("sig.sha256", r.sha256, "mono sig-sha256"),
    ...row("sig.signature", r.signature, "mono sig-signature"),
    ...(r.replaces ? row("sig.replaces", String(r.replaces)) : []));
}

function fillForm(report) {
  state.report = report;
  state.amending = false;
  const analysis = (state.view.objects ?? []).find((o) => o.analysis)?.analysis ?? {};
  const auto = { heart_rate_bpm: analysis.heart_rate_bpm, ...analysis.measurements };
  measurements.set(report.measurements && Object.keys(report.measurements).length ? report.measurements : auto, auto);
  picker.set(report.statements ?? []);
  imagingFields.show(state.view.kind === "imaging");
  imagingFields.set(report.findings);
  $("conclusion").value = report.conclusion ?? "";
  $("amend-reason").value = "";
  $("report-status").className = "status";
  $("report-status").textContent = reportState();
  renderFormState();
}

function reportState() {
  const r = state.report;
  if (!r) return ""; // still loading
  if (r.state === "proposed") return t("report.proposed");
  if (r.state === "draft") return t("report.draftOf", { version: r.version, author: r.author ?? "" });
  return t("report.signed", { version: r.version });
}

function formContent() {
  return { statements: picker.codes(), findings: imagingFields.value(), conclusion: $("conclusion").value.trim(),
    measurements: measurements.values() };
}

function reportPath(suffix = "") {
  return `/api/v1/cases/${state.caseId}/report${suffix}`;
}

async function action(button, fn) {
  setBusy(button, true);
  $("report-status").textContent = "";
  try {
    await fn();
  } catch (err) {
    $("report-status").textContent = errorText(err);
    $("report-status").className = "status error";
    return;
  } finally {
    setBusy(button, false);
  }
  $("report-status").className = "status ok";
}

async function saveDraft() {
  const draft = await api(reportPath(), { method: "PUT", json: formContent() });
  state.report = { ...state.report, ...draft };
  $("report-status").textContent = t("report.saved", { version: draft.version ?? "" });
}

async function sign() {
  await saveDraft(); // the signature covers exactly what the form shows
  const sig = await api(reportPath("/sign"), { method: "POST" });
  state.claimed = false; // signing ends the claim
  state.report = await api(reportPath());
  fillForm({ ...state.report, ...sig, state: "signed" });
  $("report-status").textContent = t("report.signed", { version: sig.version });
  loadQueueNow();
}

async function amendSign() {
  const reason = $("amend-reason").value.trim();
  if (!reason) {
    $("amend-reason").focus();
    throw new Error(t("report.reasonNeeded"));
  }
  const sig = await api(reportPath("/amend"), { method: "POST", json: { ...formContent(), reason } });
  state.claimed = false;
  state.report = await api(reportPath());
  fillForm({ ...state.report, ...sig, state: "signed" });
  $("report-status").textContent = t("report.amended", { version: sig.version });
  loadQueueNow();
}

async function release() {
  await api(`/api/v1/cases/${state.caseId}/release`, { method: "POST" });
  closeCase();
  loadQueueNow();
}

async function consult() {
  if (!confirm(t("report.consultConfirm"))) return;
  const moved = await api(`/api/v1/cases/${state.caseId}/consult`, { method: "POST" });
  toast(t("report.consulted", { site: moved.routed_to_name ?? moved.routed_to ?? "" }));
  closeCase();
  loadQueueNow();
}

// ---------------------------------------------------------------- opening and closing a case

async function claim(caseId) {
  try {
    await api(`/api/v1/cases/${caseId}/claim`, { method: "POST" });
    return { claimed: true };
  } catch (err) {
    if (err instanceof ApiError && err.status === 409) {
      const who = err.body?.claimed_by ?? err.body?.detail?.claimed_by;
      return { claimed: false, message: who ? t("queue.claimedBy", { who }) : err.message };
    }
    if (err instanceof ApiError && err.status === 403) return { claimed: false, message: err.message };
    throw err;
  }
}

/** Open a case; one still to be read is claimed at once (a signed one only when amended). */
async function openCase(caseId, { push = true } = {}) {
  caseId = Number(caseId);
  try {
    const view = await api(`/api/v1/cases/${caseId}`);
    // The trace is what the reader waits for: the viewer fetches it while the claim and the
    // report are asked for (in that order: the report a reader gets depends on the claim).
    const claimAndReport = (async () => {
      const claimed = view.review?.review_state === "open" ? await claim(caseId) : { claimed: false };
      return [claimed, await api(`/api/v1/cases/${caseId}/report`)];
    })();
    clearInterval(state.renewTimer);
    Object.assign(state, { caseId, view, report: null, claimed: false, blocked: null });
    if (push && location.pathname !== `/reader/cases/${caseId}`) history.pushState({ caseId }, "", `/reader/cases/${caseId}`);
    $("no-case").hidden = true;
    $("case-pane").hidden = false;
    $("report-pane").hidden = true; // the last case's form must not be acted on under this case
    banner(null);
    renderCaseHead();
    analysisSummary();
    renderPrevious();
    closeCompare();
    state.viewer = openViewer($("viewer-slot"), caseId, view);
    const [claimResult, report] = await claimAndReport;
    if (state.caseId !== caseId) return; // another case was opened meanwhile
    state.claimed = claimResult.claimed;
    state.blocked = claimResult.message ?? null;
    $("report-pane").hidden = false;
    banner(claimResult.message);
    fillForm(report);
    keepClaim();
    renderQueue();
    if (claimResult.claimed) loadQueueNow(); // show the claim in the queue at once
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function keepClaim() {
  clearInterval(state.renewTimer);
  const caseId = state.caseId;
  state.renewTimer = setInterval(() => state.claimed && claim(caseId), CLAIM_RENEW_MS);
}

function closeCase() {
  clearInterval(state.renewTimer);
  Object.assign(state, { caseId: null, view: null, report: null, claimed: false, blocked: null, viewer: null });
  $("case-pane").hidden = true;
  $("report-pane").hidden = true;
  $("no-case").hidden = false;
  if (location.pathname !== "/reader") history.pushState({}, "", "/reader");
  renderQueue();
}

// ---------------------------------------------------------------- wiring

$("btn-save").addEventListener("click", (e) => action(e.target, saveDraft));
$("btn-sign").addEventListener("click", (e) => action(e.target, sign));
$("btn-amend").addEventListener("click", (e) => action(e.target, async () => {
  const result = await claim(state.caseId);
  if (!result.claimed) {
    state.blocked = result.message;
    banner(result.message);
    renderFormState();
    return;
  }
  state.claimed = true;
  state.amending = true;
  renderFormState();
  $("amend-reason").focus();
}));
$("btn-amend-sign").addEventListener("click", (e) => action(e.target, amendSign));
$("btn-release").addEventListener("click", (e) => action(e.target, release));
$("btn-consult").addEventListener("click", (e) => action(e.target, consult));
$("report-form").addEventListener("submit", (e) => e.preventDefault());
$("previous-select").addEventListener("change", (e) => openCompare(Number(e.target.value)).catch((err) => toast(errorText(err), "error")));
$("compare-close").addEventListener("click", closeCompare);
for (const tab of document.querySelectorAll("#queue-tabs [data-list]")) {
  tab.addEventListener("click", () => {
    state.list = tab.dataset.list;
    for (const other of document.querySelectorAll("#queue-tabs [data-list]")) other.classList.toggle("active", other === tab);
    state.queue = [];
    renderQueue();
    loadQueue().catch((err) => toast(errorText(err), "error"));
  });
}

window.addEventListener("popstate", () => {
  const match = location.pathname.match(/^\/reader\/cases\/(\d+)$/);
  if (match) openCase(Number(match[1]), { push: false });
  else closeCase();
});

document.addEventListener("langchange", () => {
  renderQueue();
  if (!state.view) return;
  renderCaseHead();
  analysisSummary();
  renderPrevious();
  picker.render();
  measurements.render();
  renderSignature();
  $("report-status").textContent = reportState();
  state.viewer?.draw?.();
  state.compare?.draw?.();
});

const initial = Number($("workstation").dataset.caseId);
// Opened on a case (a link, a reload): the case and its trace go first; the lists beside it
// follow, so their requests do not share the server with the trace's.
const opened = initial ? openCase(initial, { push: false }) : Promise.resolve();
const loadQueueNow = poll(loadQueue, QUEUE_POLL_MS, opened);
setInterval(tickCountdowns, 1000);
alarmStream((kind, data) => {
  if (kind === "alarm" && data.severity === "critical") {
    toast(t("alarm.new", { text: localized(data.text, data.text_zh), case: data.case_id }), "error");
  }
  loadQueueNow();
});
opened.finally(() => picker.load().catch((err) => toast(errorText(err), "error")));
