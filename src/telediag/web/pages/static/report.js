// The two editable parts of a report besides its conclusion: the statements, picked from the
// standardized list, and the measurements, pre-filled from the automated analysis.
import { api, t, lang, localized, el } from "./common.js";

const MAX_RESULTS = 30;

export class StatementPicker {
  constructor(search, results, chosen) {
    this.search = search;
    this.results = results;
    this.chosen = chosen;
    this.catalog = new Map(); // code -> {code, category, en, zh}
    this.selected = [];
    this.enabled = true;
    search.addEventListener("input", () => this.renderResults());
    search.addEventListener("keydown", (e) => {
      // Enter takes the first match: the fast path for a reader who knows the code
      if (e.key !== "Enter") return;
      e.preventDefault();
      const first = this.matches()[0];
      if (first) this.add(first.code);
    });
  }

  async load() {
    const body = await api("/api/v1/statements");
    this.catalog = new Map((body.statements ?? []).map((s) => [s.code, s]));
    this.render();
  }

  set(codes) {
    this.selected = [...codes];
    this.search.value = "";
    this.render();
  }

  codes() {
    return [...this.selected];
  }

  setEnabled(enabled) {
    this.enabled = enabled;
    this.search.hidden = !enabled;
    this.render();
  }

  text(code) {
    const s = this.catalog.get(code);
    return s ? localized(s.en, s.zh) : "";
  }

  add(code) {
    if (!this.selected.includes(code)) this.selected.push(code);
    this.search.value = "";
    this.render();
    this.search.focus();
  }

  remove(code) {
    this.selected = this.selected.filter((c) => c !== code);
    this.render();
  }

  matches() {
    const q = this.search.value.trim().toLowerCase();
    if (!q) return [];
    const out = [];
    for (const s of this.catalog.values()) {
      if (this.selected.includes(s.code)) continue;
      if ([s.code, s.en, s.zh].some((v) => (v ?? "").toLowerCase().includes(q))) out.push(s);
      if (out.length >= MAX_RESULTS) break;
    }
    return out;
  }

  render() {
    this.chosen.replaceChildren(...this.selected.map((code) => el("li", { dataset: { code } },
      el("span", { class: "code" }, code), " ", el("span", {}, this.text(code)),
      this.enabled ? el("button", { type: "button", class: "remove", title: t("report.remove"),
        "aria-label": `${t("report.remove")} ${code}`, on: { click: () => this.remove(code) } }, "×") : null)));
    if (!this.selected.length) this.chosen.append(el("li", { class: "muted" }, t("report.noStatements")));
    this.renderResults();
  }

  renderResults() {
    const items = this.enabled ? this.matches() : [];
    this.results.replaceChildren(...items.map((s) => el("li", {},
      el("button", { type: "button", class: "pick", dataset: { code: s.code }, on: { click: () => this.add(s.code) } },
        el("span", { class: "code" }, s.code), " ", lang() === "zh" ? s.zh || s.en : s.en,
        s.category ? el("span", { class: "muted small" }, ` · ${s.category}`) : null))));
  }
}

// The analysis reports QTc (Bazett) under its current and its older name: one input for both.
const ALIASES = { qtc_bazett_ms: "qtc_ms" };

const UNITS = [["_ms", "ms"], ["_deg", "°"], ["_bpm", "/min"], ["_mv", "mV"], ["_uv", "µV"]];

/** A report's measurements are numbers (or null: not measurable); the analysis's flags stay out. */
function isValue(v) {
  return v === null || typeof v === "number";
}

function unitOf(key) {
  return UNITS.find(([suffix]) => key.endsWith(suffix))?.[1] ?? "";
}

/** Number inputs for the report's measurements; the automated value stays beside each one,
 * so a changed value is visible as a change. */
export class MeasurementsTable {
  constructor(table) {
    this.table = table;
    this.current = {};
    this.auto = {};
    this.enabled = true;
  }

  set(values, auto) {
    this.current = { ...(values ?? {}) };
    this.auto = auto ?? {};
    this.render();
  }

  setEnabled(enabled) {
    this.enabled = enabled;
    for (const input of this.table.querySelectorAll("input")) input.disabled = !enabled;
  }

  /** The measurements as entered: numbers, or null where a field was cleared. */
  values() {
    const out = {};
    for (const input of this.table.querySelectorAll("input[data-key]")) {
      const raw = input.value.trim();
      out[input.dataset.key] = raw === "" ? null : Number(raw);
    }
    for (const [alias, key] of Object.entries(ALIASES)) if (alias in this.current && key in out) out[alias] = out[key];
    return out;
  }

  render() {
    const keys = Object.keys(this.current).filter((k) => isValue(this.current[k])
      && !(k in ALIASES && ALIASES[k] in this.current));
    const fmt = (v) => (typeof v === "number" ? String(Math.round(v * 10) / 10) : "");
    this.table.replaceChildren(...keys.map((key) => el("tr", {},
      el("th", {}, t(`m.${key}`, {}, key)),
      el("td", {}, el("input", { type: "number", step: "any", value: fmt(this.current[key]), disabled: !this.enabled,
        dataset: { key }, "aria-label": t(`m.${key}`, {}, key),
        on: { change: (e) => { this.current[key] = e.target.value === "" ? null : Number(e.target.value); } } })),
      el("td", { class: "unit" }, unitOf(key)),
      el("td", { class: "muted small auto" }, key in this.auto ? `${t("report.auto")} ${fmt(this.auto[key])}` : ""))));
    if (!keys.length) this.table.append(el("tr", {}, el("td", { class: "muted" }, t("report.noMeasurements"))));
  }
}

/** An imaging report is a free-text findings / impression pair: the form shows a findings text
 * area above the conclusion, which it calls the impression, in place of the ECG's measurements
 * and coded statements (the list is of ECG statements). */
export class ImagingFields {
  constructor(form) {
    this.label = form.querySelector('label[for="conclusion"]');
    this.text = el("textarea", { id: "findings", rows: "8" });
    this.head = el("h3", {}, el("label", { for: "findings", dataset: { i18n: "report.findings" } }, t("report.findings")));
    this.label.closest("h3").before(this.head, this.text);
    // the ECG's parts, with the headings above the measurements and the chosen statements
    const measurements = form.querySelector("#measurements");
    const chosen = form.querySelector("#chosen-statements");
    this.ecgParts = [measurements, measurements.previousElementSibling, chosen, chosen.previousElementSibling,
      form.querySelector("#statement-results")];
    this.imaging = false;
    this.show(false);
  }

  show(imaging) {
    this.imaging = imaging;
    this.head.hidden = this.text.hidden = !imaging;
    for (const part of this.ecgParts) part.hidden = imaging;
    this.label.dataset.i18n = imaging ? "report.impression" : "report.conclusion";
    this.label.textContent = t(this.label.dataset.i18n);
  }

  set(findings) {
    this.text.value = findings ?? "";
  }

  /** The findings as entered; an ECG report has none. */
  value() {
    return this.imaging ? this.text.value.trim() : "";
  }

  setEnabled(enabled) {
    this.text.disabled = !enabled;
  }
}
