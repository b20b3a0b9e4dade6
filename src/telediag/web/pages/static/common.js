// What every page shares: the JSON API client, a small DOM builder, times and countdowns,
// toasts, polling and the alarm stream.
import { t, lang, localized } from "./i18n.js";

export { t, lang, localized };

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content ?? "";
}

function detailText(detail, fallback) {
  if (typeof detail === "string") return detail;
  // FastAPI's 422 lists the fields at fault
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc ?? []).slice(1).join(".")}: ${d.msg}`).join("; ");
  if (detail && typeof detail === "object") return detail.message ?? JSON.stringify(detail);
  return fallback;
}

/** Call the API with the page session; `json` or `form` is the body. A state-changing request
 * carries the session's CSRF token. Resolves to the parsed JSON (null for an empty answer),
 * or throws ApiError with the server's `detail`. */
export async function api(path, { method = "GET", json, form, signal } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  const res = await fetch(path, { method, headers, body, signal, credentials: "same-origin" });
  if (res.status === 401) {
    // The session ended (expired, logged out elsewhere): log in again and come back here.
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, t("error.session"));
  }
  const isJson = (res.headers.get("content-type") ?? "").includes("json");
  const data = isJson ? await res.json() : null;
  if (!res.ok) throw new ApiError(res.status, detailText(data?.detail, `${res.status} ${res.statusText}`), data);
  return data;
}

/** Build an element. Text always goes in as text (never parsed as HTML), so patient names and
 * free text from the API cannot inject markup. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// One formatter per language: toLocaleString builds a new one on every call (a queue of 200
// cases spent more time there than in drawing the ECG).
const timeFormats = {};

export function fmtTime(iso) {
  if (!iso) return "";
  const language = lang();
  timeFormats[language] ??= new Intl.DateTimeFormat(language === "zh" ? "zh-CN" : "en-GB", {
    year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric",
    hour12: false });
  return timeFormats[language].format(new Date(iso));
}

/** Time left until `iso` as "mm:ss" (or "h:mm:ss"), negative once it has passed. */
export function countdown(iso, now = Date.now()) {
  if (!iso) return { text: "", overdue: false, seconds: null };
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  const h = Math.floor(abs / 3600);
  const m = Math.floor((abs % 3600) / 60);
  const s = String(abs % 60).padStart(2, "0");
  const text = (seconds < 0 ? "-" : "") + (h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`);
  return { text, overdue: seconds < 0, seconds };
}

export function patientText(p) {
  if (!p) return "";
  const sex = p.sex ? t(`sex.${p.sex}`) : "";
  // DICOM and the carts give birth dates as YYYYMMDD
  const born = /^\d{8}$/.test(p.birth_date ?? "") ? p.birth_date.replace(/(\d{4})(\d\d)(\d\d)/, "$1-$2-$3") : p.birth_date;
  return [p.name || p.patient_key || "—", sex, born ?? ""].filter(Boolean).join(" · ");
}

export function errorText(err) {
  return err instanceof ApiError ? `${err.status}: ${err.message}` : String(err?.message ?? err);
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 10000 : 5000);
}

/** Run `fn` once `after` settles (at once by default) and every `ms` from then; a slow answer
 * never overlaps the next call. Returns a function that runs it at once (after an action, or
 * when the alarm stream says so). */
export function poll(fn, ms, after = Promise.resolve()) {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try {
      await fn();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) console.warn("refresh failed", err);
    } finally {
      running = false;
    }
  };
  after.finally(() => {
    run();
    setInterval(run, ms);
  });
  return run;
}

/** Listen to the alarm stream (Server-Sent Events) where the caller may; polling stays the
 * fallback, so a refused or broken stream only makes updates slower. */
export function alarmStream(onEvent) {
  if (!("EventSource" in window)) return;
  const source = new EventSource("/api/v1/alarms/stream", { withCredentials: true });
  for (const kind of ["alarm", "ack", "escalation", "report", "report_ack"]) {
    source.addEventListener(kind, (ev) => {
      let data = null;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      onEvent(kind, data);
    });
  }
}

export function setBusy(button, busy) {
  button.disabled = busy;
  button.classList.toggle("busy", busy);
}
