// The image viewer: a case's images as one stack per series (ordered by instance number, every
// frame of a multi-frame image in turn), each frame rendered by the server
// (GET .../preview.png?frame=&wc=&ww=) in the window the reader picks: the header's presets, the
// CT presets for CT, or a window dragged on the image (horizontal: width, vertical: level). The
// server applies it to the full-depth pixels, so nothing of a 12-bit CT is lost to an 8-bit copy.
// Wheel: next / previous frame; Ctrl+wheel or the buttons: zoom (1 fits the image in the viewer);
// Shift+drag or the pan tool: pan. A frame is fetched at the resolution it is shown at, up to its
// own, so a 3000-pixel radiograph does not cross a township's line whole at every window change.
import { t, el } from "./common.js";

// Window presets of CT in Hounsfield units (center, width), as radiology departments use them.
const CT_PRESETS = [
  { key: "brain", center: 40, width: 80 },
  { key: "lung", center: -600, width: 1500 },
  { key: "bone", center: 400, width: 1800 },
  { key: "abdomen", center: 50, width: 400 },
];
// While dragging, at most one preview request per this many ms (the last position always follows).
const DRAG_REQUEST_MS = 120;
// Dragging 200 pixels changes the window by its own width: fine for a brain window, fast enough for MR.
const DRAG_PIXELS_PER_WIDTH = 200;
// Requested sizes are rounded up to this step, so zooming reuses the browser's cached frames.
const SIZE_STEP = 256;

/** Series of the case's images, each a stack of {objectId, frame, facts} in reading order. */
function stacks(objects) {
  const series = new Map();
  for (const [order, obj] of objects.entries()) {
    const facts = obj.analysis?.imaging ?? {};
    const uid = facts.series_uid ?? "";
    if (!series.has(uid)) {
      series.set(uid, { uid, number: facts.series_number, description: facts.series_description ?? "", images: [] });
    }
    series.get(uid).images.push({ obj, facts, order });
  }
  return [...series.values()]
    .sort((a, b) => (a.number ?? Infinity) - (b.number ?? Infinity))
    .map((s) => ({
      ...s,
      frames: s.images
        .sort((a, b) => (a.facts.instance_number ?? Infinity) - (b.facts.instance_number ?? Infinity) || a.order - b.order)
        .flatMap(({ obj, facts }) => Array.from({ length: Math.max(facts.frames ?? 1, 1) },
          (_, frame) => ({ objectId: obj.object_id, frame, facts }))),
    }));
}

export class ImageViewer {
  constructor(container, { caseId, objects }) {
    this.caseId = caseId;
    this.series = stacks(objects);
    this.seriesIndex = 0;
    this.position = 0;
    this.window = null; // {center, width}; null: the image's own (header or auto) window
    this.zoom = 1;
    this.tool = "window";
    this.loading = false; // a frame is being fetched
    this.wanted = null; // what to show once it is there (the latest wish)
    this.lastRequest = 0;

    this.canvas = el("canvas", { class: "image-canvas" });
    this.status = el("p", { class: "viewer-status muted" });
    this.readout = el("span", { class: "wl-readout" });
    this.where = el("span", { class: "image-position muted" });
    this.presets = el("select", { class: "wl-presets", "aria-label": t("image.preset"),
      on: { change: () => this.pickPreset(this.presets.value) } });
    this.seriesSelect = el("select", { class: "image-series", "aria-label": t("image.series"),
      on: { change: () => this.showSeries(Number(this.seriesSelect.value)) } });
    this.slider = el("input", { type: "range", class: "image-slider", min: "0", value: "0", "aria-label": t("image.frame"),
      on: { input: () => this.go(Number(this.slider.value)) } });
    const button = (label, fn, attrs = {}) => el("button", { type: "button", ...attrs, on: { click: fn } }, label);
    this.toolButtons = {
      window: button(t("image.toolWindow"), () => this.setTool("window"), { dataset: { tool: "window", i18n: "image.toolWindow" } }),
      pan: button(t("image.toolPan"), () => this.setTool("pan"), { dataset: { tool: "pan", i18n: "image.toolPan" } }),
    };
    const toolbar = el("div", { class: "viewer-toolbar" },
      this.seriesSelect, this.presets, this.toolButtons.window, this.toolButtons.pan,
      button("−", () => this.setZoom(this.zoom / 1.25), { "aria-label": t("viewer.zoom") }),
      button("+", () => this.setZoom(this.zoom * 1.25), { "aria-label": t("viewer.zoom") }),
      button(t("image.reset"), () => this.reset(), { dataset: { i18n: "image.reset" } }),
      this.readout);
    const stackBar = el("div", { class: "viewer-toolbar" },
      button("‹", () => this.go(this.position - 1), { class: "frame-prev", "aria-label": t("image.previous") }),
      this.slider,
      button("›", () => this.go(this.position + 1), { class: "frame-next", "aria-label": t("image.next") }),
      this.where);
    this.scroller = el("div", { class: "image-scroll" }, this.canvas);
    container.replaceChildren(el("div", { class: "image-viewer" }, toolbar, stackBar, this.status, this.scroller));
    this.bindPointer();
    this.canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      if (e.ctrlKey) this.setZoom(this.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1));
      else this.go(this.position + (e.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    this.setTool("window");
  }

  get stack() {
    return this.series[this.seriesIndex]?.frames ?? [];
  }

  get current() {
    return this.stack[this.position];
  }

  open() {
    if (!this.stack.length) {
      this.status.textContent = t("image.noPreview");
      this.canvas.hidden = true;
      return;
    }
    this.showSeries(0);
  }

  showSeries(index) {
    this.seriesIndex = index;
    this.position = Math.floor((this.stack.length - 1) / 2); // the middle, as the study thumbnail
    this.window = null;
    this.draw();
    this.load();
  }

  /** The toolbar's texts and choices (on opening, a new series, a language change). */
  draw() {
    this.canvas.title = t("image.hint");
    this.seriesSelect.hidden = this.series.length < 2;
    this.seriesSelect.replaceChildren(...this.series.map((s, i) => el("option", { value: String(i), selected: i === this.seriesIndex },
      `${s.number ?? ""} ${s.description || t("image.seriesN", { n: i + 1 })} (${s.frames.length})`.trim())));
    const facts = this.current?.facts ?? {};
    const header = (facts.windows ?? []).map((w, i) => ({ key: `header:${i}`, center: w.center, width: w.width,
      label: w.explanation === "auto" ? t("image.auto") : w.explanation || t("image.wl", { w: w.width, l: w.center }) }));
    const ct = (facts.modality ?? "").toUpperCase() === "CT"
      ? CT_PRESETS.map((p) => ({ key: `ct:${p.key}`, center: p.center, width: p.width, label: t(`image.ct.${p.key}`) }))
      : [];
    this.choices = [...header, ...ct];
    const chosen = this.choices.find((c) => this.window && c.center === this.window.center && c.width === this.window.width);
    const options = [el("option", { value: "" }, t("image.default")),
      ...this.choices.map((c) => el("option", { value: c.key, selected: c === chosen }, c.label))];
    if (this.window && !chosen) options.push(el("option", { value: "custom", selected: true }, t("image.custom")));
    this.presets.replaceChildren(...options);
    this.presets.disabled = !this.choices.length;
    this.slider.max = String(Math.max(this.stack.length - 1, 0));
    this.slider.value = String(this.position);
    this.slider.hidden = this.stack.length < 2;
    this.where.textContent = this.stack.length
      ? t("image.position", { n: this.position + 1, total: this.stack.length }) : "";
    const shown = this.window ?? (facts.windows ?? [])[0];
    this.readout.textContent = shown ? t("image.wl", { w: Math.round(shown.width), l: Math.round(shown.center) }) : "";
    for (const [tool, b] of Object.entries(this.toolButtons)) b.setAttribute("aria-pressed", String(tool === this.tool));
  }

  pickPreset(key) {
    const choice = this.choices.find((c) => c.key === key);
    this.window = choice ? { center: choice.center, width: choice.width } : null;
    this.draw();
    this.load();
  }

  go(position) {
    const next = Math.min(Math.max(position, 0), this.stack.length - 1);
    if (next === this.position) return;
    this.position = next;
    this.draw();
    this.load();
  }

  setTool(tool) {
    this.tool = tool;
    this.canvas.style.cursor = tool === "pan" ? "grab" : "crosshair";
    this.draw();
  }

  reset() {
    this.window = null;
    this.setZoom(1);
    this.scroller.scrollTo(0, 0);
    this.draw();
    this.load();
  }

  /** The frame's own size in pixels, and the scale that fits it into the viewer. */
  geometry() {
    const facts = this.current?.facts ?? {};
    const width = facts.columns || this.canvas.width || 1;
    const height = facts.rows || this.canvas.height || 1;
    const boxHeight = parseFloat(getComputedStyle(this.scroller).maxHeight) || window.innerHeight * 0.7;
    const fit = Math.min((this.scroller.clientWidth || width) / width, boxHeight / height);
    return { width, height, fit };
  }

  /** The current frame in the current window: what to fetch, and what the canvas then shows. */
  wish() {
    const { objectId, frame } = this.current;
    const query = new URLSearchParams({ frame: String(frame) });
    const { width, height, fit } = this.geometry();
    const side = Math.max(width, height);
    const needed = Math.ceil(side * fit * this.zoom * (window.devicePixelRatio || 1) / SIZE_STEP) * SIZE_STEP;
    if (needed < side) query.set("size", String(needed));
    const wl = this.window && { center: Math.round(this.window.center * 10) / 10,
      width: Math.max(1, Math.round(this.window.width * 10) / 10) };
    if (wl) {
      query.set("wc", String(wl.center));
      query.set("ww", String(wl.width));
    }
    return { url: `/api/v1/cases/${this.caseId}/objects/${objectId}/preview.png?${query}`, objectId, frame,
      window: wl ? `${wl.center},${wl.width}` : "" };
  }

  /** Show the current frame in the current window; while a request runs, only the latest wish
   * is kept, so dragging or scrolling fast never queues stale frames. */
  load() {
    if (!this.current) return;
    this.wanted = this.wish();
    if (!this.loading) this.fetchWanted();
  }

  async fetchWanted() {
    this.loading = true;
    const wait = this.lastRequest + DRAG_REQUEST_MS - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const wish = this.wanted;
    this.lastRequest = performance.now();
    if (!this.canvas.dataset.imageLoaded) this.status.textContent = t("viewer.loading");
    try {
      const res = await fetch(wish.url, { credentials: "same-origin" });
      if (!res.ok) {
        this.status.textContent = res.status === 404 ? t("image.noPreview") : `${t("viewer.failed")}: ${res.status}`;
      } else {
        this.paint(await createImageBitmap(await res.blob()), wish);
        this.status.textContent = "";
      }
    } catch (err) {
      this.status.textContent = `${t("viewer.failed")}: ${err.message}`;
    } finally {
      this.loading = false;
    }
    if (this.wanted.url !== wish.url) this.fetchWanted();
  }

  paint(bitmap, { objectId, frame, window }) {
    this.canvas.hidden = false;
    this.canvas.width = bitmap.width;
    this.canvas.height = bitmap.height;
    this.canvas.getContext("2d").drawImage(bitmap, 0, 0);
    Object.assign(this.canvas.dataset, { imageLoaded: "true", objectId: String(objectId), frame: String(frame), window });
    this.setZoom(this.zoom);
  }

  setZoom(zoom) {
    const before = this.zoom;
    this.zoom = Math.min(8, Math.max(0.25, zoom));
    if (!this.current) return;
    const { width, height, fit } = this.geometry();
    this.canvas.style.width = `${Math.round(width * fit * this.zoom)}px`;
    this.canvas.style.height = `${Math.round(height * fit * this.zoom)}px`;
    this.canvas.style.margin = "0 auto";
    if (this.zoom > before) this.load(); // sharper pixels, once the shown size needs them
  }

  bindPointer() {
    let last = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      this.canvas.setPointerCapture(e.pointerId);
      const facts = this.current?.facts ?? {};
      const start = this.window ?? (facts.windows ?? [])[0];
      const pan = this.tool === "pan" || e.shiftKey || e.button === 1 || !start;
      last = { x: e.clientX, y: e.clientY, pan };
      if (!pan) this.window = { ...start };
    });
    this.canvas.addEventListener("pointermove", (e) => {
      if (!last) return;
      const dx = e.clientX - last.x;
      const dy = e.clientY - last.y;
      last = { ...last, x: e.clientX, y: e.clientY };
      if (last.pan) {
        this.scroller.scrollBy(-dx, -dy);
        return;
      }
      const step = Math.max(this.window.width, 10) / DRAG_PIXELS_PER_WIDTH;
      this.window = { width: Math.max(1, this.window.width + dx * step), center: this.window.center + dy * step };
      this.draw();
      this.load();
    });
    const stop = () => { last = null; };
    this.canvas.addEventListener("pointerup", stop);
    this.canvas.addEventListener("pointercancel", stop);
  }
}
