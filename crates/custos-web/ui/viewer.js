// The quick viewer: a series shown one image at a time from the server's
// WADO-RS /rendered (decoded, windowed and scaled there, so every transfer
// syntax the server decodes shows the same way, colour and palette
// included). Scroll with the wheel, arrow keys or the slider; window/level by
// dragging or presets; zoom with Ctrl+wheel or +/-, pan with Shift+drag; cine
// plays the frames of a multi-frame instance (or the series).

import { el } from "/ui/dom.js";

const PRESETS = [
  ["Default", null], ["Lung", [-600, 1500]], ["Bone", [300, 1500]],
  ["Brain", [40, 80]], ["Abdomen", [40, 400]],
];

/**
 * Shows `images` ({url, number, frames}) in `box`. Each frame of each
 * instance is one position of the slider.
 */
export function openViewer(box, images) {
  const slices = images.flatMap((image) =>
    Array.from({ length: image.frames }, (_, f) => ({ image, frame: f + 1 })));
  const view = { index: Math.floor(slices.length / 2), window: null, zoom: 1, pan: [0, 0], playing: null };
  const img = el("img", { alt: "The selected image", draggable: "false" });
  const overlay = el("div", { class: "overlay" });
  const stage = el("div", { class: "stage", tabindex: 0, "aria-label": "Image; arrow keys scroll" }, img, overlay);
  const slider = el("input", { type: "range", min: 1, max: Math.max(1, slices.length), value: view.index + 1, "aria-label": "Image number" });
  const counter = el("span", { class: "hint" });
  const presetButtons = PRESETS.map(([label, w]) => el("button", { type: "button", text: label, "data-preset": label, on: { click: () => {
    view.window = w ? [...w] : null;
    show();
  } } }));
  const play = el("button", { type: "button", text: "Play", on: { click: toggleCine } });
  const zoomIn = el("button", { type: "button", text: "+", "aria-label": "Zoom in", on: { click: () => zoom(1.25) } });
  const zoomOut = el("button", { type: "button", text: "−", "aria-label": "Zoom out", on: { click: () => zoom(0.8) } });
  const reset = el("button", { type: "button", text: "Reset", on: { click: () => { view.zoom = 1; view.pan = [0, 0]; view.window = null; show(); } } });
  box.replaceChildren(
    el("div", { class: "tools" }, ...presetButtons, zoomOut, zoomIn, reset, play),
    stage,
    el("div", { class: "scroll" }, slider, counter));

  const cache = new Map();
  function src(i) {
    const s = slices[i];
    const size = Math.min(2048, Math.round(Math.max(stage.clientWidth, stage.clientHeight, 256) * devicePixelRatio));
    const q = new URLSearchParams({ viewport: `${size},${size}` });
    if (s.image.frames > 1) q.set("frame", String(s.frame));
    if (view.window) q.set("window", `${Math.round(view.window[0])},${Math.max(1, Math.round(view.window[1]))}`);
    return `${s.image.url}/rendered?${q}`;
  }
  function preload(i) {
    if (i < 0 || i >= slices.length) return;
    const url = src(i);
    if (cache.has(url)) return;
    const p = new Image();
    p.src = url;
    cache.set(url, p);
    if (cache.size > 64) cache.delete(cache.keys().next().value);
  }
  function show() {
    if (!slices.length) {
      overlay.textContent = "This series has no images.";
      return;
    }
    view.index = Math.max(0, Math.min(slices.length - 1, view.index));
    const s = slices[view.index];
    img.src = src(view.index);
    img.dataset.index = String(view.index);
    img.style.transform = `translate(${view.pan[0]}px, ${view.pan[1]}px) scale(${view.zoom})`;
    slider.value = String(view.index + 1);
    counter.textContent = `${view.index + 1} / ${slices.length}`;
    const w = view.window ? `W ${Math.round(view.window[1])} L ${Math.round(view.window[0])}` : "W/L from the image";
    overlay.textContent = `Image ${s.image.number}${s.image.frames > 1 ? ` frame ${s.frame}/${s.image.frames}` : ""}\n${w}\nZoom ${view.zoom.toFixed(2)}`;
    for (const b of presetButtons) {
      const preset = PRESETS.find(([l]) => l === b.dataset.preset)[1];
      b.classList.toggle("active", JSON.stringify(preset) === JSON.stringify(view.window));
    }
    preload(view.index + 1);
    preload(view.index - 1);
  }
  function step(d) { view.index += d; show(); }
  function zoom(f) { view.zoom = Math.max(0.25, Math.min(16, view.zoom * f)); show(); }
  function toggleCine() {
    if (view.playing) {
      clearInterval(view.playing);
      view.playing = null;
      play.textContent = "Play";
      return;
    }
    play.textContent = "Pause";
    view.playing = setInterval(() => {
      // This series' image gone (another series opened, or another page).
      if (!stage.isConnected) return clearInterval(view.playing);
      view.index = (view.index + 1) % slices.length;
      show();
    }, 100);
  }

  slider.addEventListener("input", () => { view.index = Number(slider.value) - 1; show(); });
  stage.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) zoom(e.deltaY < 0 ? 1.1 : 0.9);
    else step(e.deltaY > 0 ? 1 : -1);
  }, { passive: false });
  stage.addEventListener("keydown", (e) => {
    const keys = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
    if (e.key in keys) { e.preventDefault(); step(keys[e.key]); }
    else if (e.key === "Home") { view.index = 0; show(); }
    else if (e.key === "End") { view.index = slices.length - 1; show(); }
    else if (e.key === "+" || e.key === "=") zoom(1.25);
    else if (e.key === "-") zoom(0.8);
  });
  // Drag: window/level (centre up/down, width left/right), or pan with Shift.
  let drag = null;
  let pending = null;
  stage.addEventListener("pointerdown", (e) => {
    stage.setPointerCapture(e.pointerId);
    stage.focus();
    drag = { x: e.clientX, y: e.clientY, window: view.window ? [...view.window] : [40, 400], pan: [...view.pan], shift: e.shiftKey };
  });
  stage.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (drag.shift) {
      view.pan = [drag.pan[0] + dx, drag.pan[1] + dy];
      img.style.transform = `translate(${view.pan[0]}px, ${view.pan[1]}px) scale(${view.zoom})`;
      return;
    }
    view.window = [drag.window[0] + dy * 2, Math.max(1, drag.window[1] + dx * 4)];
    // Ask the server at most every 120 ms while dragging.
    if (!pending) pending = setTimeout(() => { pending = null; show(); }, 120);
  });
  stage.addEventListener("pointerup", () => { drag = null; show(); });
  new ResizeObserver(() => show()).observe(stage);
  show();
  stage.focus();
}
