// The administrators' page: sites, devices (add with the API key shown once, rotate the key),
// users (add, disable) and a case's audit trail. The API scopes each list to the caller's
// center (a center admin) or the whole network (the network admin).
import { api, t, el, fmtTime, errorText, setBusy } from "./common.js";

const $ = (id) => document.getElementById(id);
let sites = [];

function status(text, ok = true) {
  $("admin-status").className = `status ${ok ? "ok" : "error"}`;
  $("admin-status").textContent = text;
}

function showKey(device, key) {
  $("device-key").hidden = false;
  $("device-key-value").textContent = key;
  $("device-key").dataset.device = device;
}

function siteName(id) {
  return sites.find((s) => s.id === id)?.name ?? (id ?? "");
}

function activeText(active) {
  return active === false ? t("state.disabled") : t("state.active");
}

async function loadSites() {
  sites = await api("/api/v1/sites");
  $("sites").tBodies[0].replaceChildren(...sites.map((s) => el("tr", {},
    el("td", {}, String(s.id)), el("td", {}, s.name), el("td", {}, t(`level.${s.level}`, {}, s.level)),
    el("td", {}, siteName(s.parent_id)), el("td", {}, activeText(s.active)))));
  for (const select of document.querySelectorAll(".site-select")) {
    select.replaceChildren(...sites.filter((s) => s.active !== false).map((s) =>
      el("option", { value: s.name }, `${s.name} (${t(`level.${s.level}`, {}, s.level)})`)));
  }
}

async function loadDevices() {
  const devices = await api("/api/v1/devices");
  $("devices").tBodies[0].replaceChildren(...devices.map((d) => el("tr", { dataset: { device: d.name } },
    el("td", {}, d.name), el("td", {}, d.site), el("td", {}, d.ae_title ?? ""),
    el("td", {}, activeText(d.active)),
    el("td", {}, el("button", { type: "button", class: "rotate", on: { click: (e) => rotate(d.name, e.target) } },
      t("device.rotate"))))));
}

async function loadUsers() {
  const users = await api("/api/v1/users");
  $("users").tBodies[0].replaceChildren(...users.map((u) => el("tr", { dataset: { username: u.username } },
    el("td", {}, u.username), el("td", {}, u.display_name ?? ""), el("td", {}, t(`role.${u.role}`, {}, u.role)),
    el("td", {}, u.site),
    el("td", {}, (u.qualified ?? []).map((q) => t(`qual.${q}`, {}, q)).join(", ")),
    el("td", {}, activeText(u.active)),
    el("td", {}, u.active === false ? "" : el("button", { type: "button", class: "disable",
      on: { click: (e) => disable(u.username, e.target) } }, t("user.disable"))))));
}

async function rotate(name, button) {
  if (!confirm(t("device.rotateConfirm", { name }))) return;
  setBusy(button, true);
  try {
    const body = await api(`/api/v1/devices/${encodeURIComponent(name)}/rotate-key`, { method: "POST" });
    showKey(name, body.api_key);
    status(t("device.rotated", { name }));
  } catch (err) {
    status(errorText(err), false);
  } finally {
    setBusy(button, false);
  }
}

async function disable(username, button) {
  if (!confirm(t("user.disableConfirm", { username }))) return;
  setBusy(button, true);
  try {
    await api(`/api/v1/users/${encodeURIComponent(username)}/disable`, { method: "POST" });
    status(t("user.disabled", { username }));
    await loadUsers();
  } catch (err) {
    status(errorText(err), false);
    setBusy(button, false);
  }
}

/** Submit a form as JSON; `shape` turns its FormData into the request body. */
function jsonForm(form, path, shape, done) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    setBusy(button, true);
    try {
      const body = await api(path, { method: "POST", json: shape(new FormData(form)) });
      form.reset();
      await done(body);
    } catch (err) {
      status(errorText(err), false);
    } finally {
      setBusy(button, false);
    }
  });
}

jsonForm($("device-form"), "/api/v1/devices",
  (f) => ({ name: f.get("name").trim(), site: f.get("site"), ae_title: f.get("ae_title").trim() || null }),
  async (body) => {
    showKey(body.name, body.api_key);
    status(t("device.added", { name: body.name }));
    await loadDevices();
  });

jsonForm($("user-form"), "/api/v1/users",
  (f) => ({ username: f.get("username").trim(), display_name: f.get("display_name").trim(), password: f.get("password"),
    role: f.get("role"), site: f.get("site"), qualified: f.getAll("qualified") }),
  async (body) => {
    status(t("user.added", { username: body.username ?? "" }));
    await loadUsers();
  });

$("audit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const caseId = new FormData(e.target).get("case_id");
  try {
    const { entries } = await api(`/api/v1/audit?case_id=${encodeURIComponent(caseId)}`);
    $("audit").tBodies[0].replaceChildren(...entries.map((a) => el("tr", {},
      el("td", {}, fmtTime(a.at)), el("td", {}, a.username ?? ""), el("td", {}, a.role ? t(`role.${a.role}`, {}, a.role) : ""),
      el("td", {}, t(`act.${a.action}`, {}, a.action)),
      el("td", { class: "mono small" }, typeof a.detail === "string" ? a.detail : JSON.stringify(a.detail ?? "")),
      el("td", {}, a.address ?? ""))));
    status(t("audit.count", { n: entries.length }));
  } catch (err) {
    status(errorText(err), false);
  }
});

for (const tab of document.querySelectorAll("#tabs [data-tab]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("#tabs [data-tab]")) {
      other.classList.toggle("active", other === tab);
      $(`tab-${other.dataset.tab}`).hidden = other !== tab;
    }
  });
}

async function loadAll() {
  try {
    await loadSites();
    await Promise.all([loadDevices(), loadUsers()]);
  } catch (err) {
    status(errorText(err), false);
  }
}

document.addEventListener("langchange", loadAll);
loadAll();
