// The image viewer: an imaging object's preview (rendered by the server with its default
// window), with window/level by dragging (horizontal: width, vertical: level) and zoom.
// The preview is 8-bit, so window/level here re-maps its grey values: enough to bring out
// what a clinic's default window hides, without sending the full pixel data to the browser.
import { t, el } from "./common.js";

export class ImageViewer {
  constructor(container, { caseId, objectId }) {
    this.url = `/api/v1/cases/${caseId}/objects/${objectId}/preview.png`;
    this.zoom = 1;
    this.level = 128;
    this.width = 256;
    this.canvas = el("canvas", { class: "image-canvas", title: t("image.hint") });
    this.status = el("p", { class: "viewer-status muted" });
    this.readout = el("span", { class: "wl-readout" });
    const button = (label, fn) => el("button", { type: "button", on: { click: fn } }, label);
    const toolbar = el("div", { class: "viewer-toolbar" },
      button("−", () => this.setZoom(this.zoom / 1.25)),
      button("+", () => this.setZoom(this.zoom * 1.25)),
      button(t("image.reset"), () => this.reset()),
      this.readout);
    container.replaceChildren(el("div", { class: "image-viewer" }, toolbar, this.status,
      el("div", { class: "image-scroll" }, this.canvas)));
    this.bindDrag();
    this.canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.setZoom(this.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1));
    }, { passive: false });
  }

  async open() {
    this.status.textContent = t("viewer.loading");
    const res = await fetch(this.url, { credentials: "same-origin" });
    if (!res.ok) {
      this.status.textContent = res.status === 404 ? t("image.noPreview") : `${t("viewer.failed")}: ${res.status}`;
      this.canvas.hidden = true;
      return;
    }
    const bitmap = await createImageBitmap(await res.blob());
    const scratch = new OffscreenCanvas(bitmap.width, bitmap.height);
    const sctx = scratch.getContext("2d");
    sctx.drawImage(bitmap, 0, 0);
    this.original = sctx.getImageData(0, 0, bitmap.width, bitmap.height);
    this.canvas.width = bitmap.width;
    this.canvas.height = bitmap.height;
    this.status.textContent = "";
    this.canvas.dataset.imageLoaded = "true";
    this.reset();
  }

  reset() {
    this.level = 128;
    this.width = 256;
    this.setZoom(1);
    this.render();
  }

  setZoom(zoom) {
    this.zoom = Math.min(8, Math.max(0.25, zoom));
    if (!this.original) return;
    this.canvas.style.width = `${this.original.width * this.zoom}px`;
    this.canvas.style.height = `${this.original.height * this.zoom}px`;
  }

  render() {
    if (!this.original) return;
    const src = this.original.data;
    const out = new ImageData(this.original.width, this.original.height);
    const low = this.level - this.width / 2;
    const scale = 255 / this.width;
    // one lookup table for the 256 grey values instead of arithmetic per pixel
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = (v - low) * scale;
    for (let i = 0; i < src.length; i += 4) {
      out.data[i] = lut[src[i]];
      out.data[i + 1] = lut[src[i + 1]];
      out.data[i + 2] = lut[src[i + 2]];
      out.data[i + 3] = src[i + 3];
    }
    this.canvas.getContext("2d").putImageData(out, 0, 0);
    this.readout.textContent = t("image.wl", { w: Math.round(this.width), l: Math.round(this.level) });
  }

  bindDrag() {
    let last = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      this.canvas.setPointerCapture(e.pointerId);
      last = { x: e.clientX, y: e.clientY };
    });
    this.canvas.addEventListener("pointermove", (e) => {
      if (!last) return;
      this.width = Math.min(1024, Math.max(2, this.width + (e.clientX - last.x)));
      this.level = Math.min(384, Math.max(-128, this.level + (e.clientY - last.y)));
      last = { x: e.clientX, y: e.clientY };
      this.render();
    });
    const stop = () => { last = null; };
    this.canvas.addEventListener("pointerup", stop);
    this.canvas.addEventListener("pointercancel", stop);
  }
}
