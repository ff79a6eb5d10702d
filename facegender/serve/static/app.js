// facegender upload page: one request per photo (so one bad or huge file never sinks the
// others, and results appear as they come), at most two in flight.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { limits: null, queue: [], running: 0, total: 0 };
const PARALLEL = 2;

function pct(p) {
  // Never print a calibrated 0.997 as a certain "100%".
  if (p >= 0.995) return ">99%";
  if (p < 0.005) return "<1%";
  return `${Math.round(p * 100)}%`;
}

function mb(n) {
  return `${(n / 1048576).toFixed(n < 10485760 ? 1 : 0)} MB`;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/model");
    if (!r.ok) throw new Error(r.statusText);
    const m = await r.json();
    state.limits = m.limits;
    const band = m.unsure_band
      ? ` · “unsure” when p(male) is ${pct(0.5 - m.unsure_band)}–${pct(0.5 + m.unsure_band)}`
      : "";
    // Without the detector each photo is one face: "largest face" would mean nothing.
    $("#opt-largest").closest("label").hidden = !m.detect;
    $("#model").textContent =
      `model ${m.name} (${m.arch}, ${m.backend})${m.detect ? " · face detector on" : ""}${band}`;
  } catch (e) {
    $("#model").textContent = "model information unavailable";
  }
}

function showBanner(text) {
  const b = $("#banner");
  b.textContent = text;
  b.hidden = !text;
}

function addFiles(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  showBanner("");
  for (const file of files) {
    state.queue.push({ file, card: makeCard(file) });
    state.total += 1;
  }
  updateCount();
  pump();
}

function updateCount() {
  $("#toolbar").hidden = state.total === 0;
  $("#count").textContent = `${state.total} file${state.total === 1 ? "" : "s"}`;
}

function makeCard(file) {
  const node = $("#card-tpl").content.firstElementChild.cloneNode(true);
  node.querySelector(".name").textContent = file.name || "pasted image";
  let img = node.querySelector("img");
  const url = URL.createObjectURL(file);
  if ((file.type || "").startsWith("video/")) {
    // A video is previewed as itself; its faces are listed as tracks, not drawn as boxes.
    const video = document.createElement("video");
    video.muted = true;
    video.controls = true;
    video.preload = "metadata";
    img.replaceWith(video);
    img = video;
  }
  img.src = url;
  img.alt = file.name || "uploaded photo";
  img.addEventListener("error", () => {
    // e.g. TIFF or HEIC: the server may still read it, the browser cannot show it.
    node.querySelector(".photo").classList.add("no-preview");
    node.querySelector(".photo").dataset.note = "This browser cannot display this format.";
    if (node.classList.contains("failed")) node.querySelector(".photo").hidden = true;
  });
  node._url = url;
  $("#results").append(node);
  return node;
}

function pump() {
  while (state.running < PARALLEL && state.queue.length) {
    const job = state.queue.shift();
    state.running += 1;
    analyse(job).finally(() => {
      state.running -= 1;
      pump();
    });
  }
}

async function analyse({ file, card }) {
  const limit = state.limits && state.limits.max_upload_bytes;
  if (limit && file.size > limit - 4096) {
    return fail(card, `This file is ${mb(file.size)}; the server accepts up to ${mb(limit)} per file.`);
  }
  const form = new FormData();
  form.append("files", file, file.name || "pasted.png");
  form.append("tta", $("#opt-tta").checked ? "true" : "false");
  form.append("largest", $("#opt-largest").checked ? "true" : "false");
  let response;
  try {
    response = await fetch("/v1/predict", { method: "POST", body: form });
  } catch (e) {
    return fail(card, "Could not reach the server. Is it still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    /* not JSON: handled below */
  }
  if (!response.ok || !body || !body.results) {
    // Every refusal has the API's one error shape: {status, code, message, errors}.
    const detail = body && typeof body.message === "string" ? body.message : response.statusText;
    return fail(card, `The server refused this file: ${detail}`);
  }
  render(card, body.results[0]);
}

function fail(card, message) {
  card.classList.add("failed");
  const photo = card.querySelector(".photo");
  if (photo.classList.contains("no-preview")) photo.hidden = true; // not a picture at all
  const s = card.querySelector(".status");
  s.textContent = message;
  s.classList.add("error");
}

function seconds(t) {
  return t == null ? "–" : `${Number(t).toFixed(1)} s`;
}

// A video's result: one line per person (track) with its one label, and the screen time.
function renderVideo(card, result) {
  const tracks = result.tracks || [];
  const sum = result.summary;
  card.querySelector(".status").textContent =
    `${tracks.length} ${tracks.length === 1 ? "person" : "people"} tracked · ` +
    `${seconds(result.duration)} · ${result.frames} frames read (${result.sampling})`;
  if (sum) {
    const line = card.querySelector(".summary");
    line.textContent =
      `On screen: women ${seconds(sum.screen_time.female)}, men ${seconds(sum.screen_time.male)}` +
      ` · people: ${sum.tracks.female} women, ${sum.tracks.male} men` +
      (sum.unsure_share ? ` · ${pct(sum.unsure_share)} unsure` : "");
    line.hidden = false;
  }
  const list = card.querySelector(".faces");
  tracks.forEach((t) => {
    const li = document.createElement("li");
    li.className = `face track ${t.unsure ? "unsure" : t.label}`;
    const head = document.createElement("div");
    head.className = "face-head";
    const label = document.createElement("strong");
    label.textContent = `Person ${t.track_id}: ${t.unsure ? "unsure" : t.label}`;
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = pct(t.score);
    head.append(label, prob);
    const legend = document.createElement("div");
    legend.className = "legend";
    legend.textContent = `on screen ${seconds(t.seconds)} (${seconds(t.start)} – ` +
      `${seconds(t.end)}) · ${t.frames} frame${t.frames === 1 ? "" : "s"}`;
    li.append(head, legend);
    list.append(li);
  });
  card.classList.add("done");
}

function render(card, result) {
  const status = card.querySelector(".status");
  if (result.error) return fail(card, `Couldn't use this file: ${result.error}.`);
  if (Array.isArray(result.tracks)) return renderVideo(card, result);
  const faces = result.faces || [];
  status.textContent = faces.length
    ? `${faces.length} face${faces.length === 1 ? "" : "s"} · ${result.width}×${result.height}`
    : "No face found in this photo.";
  const boxes = card.querySelector(".boxes");
  const list = card.querySelector(".faces");
  faces.forEach((f, i) => {
    const sure = !f.unsure;
    const p = f.score; // probability of the label, as in every face record
    const cls = sure ? f.label : "unsure";
    const tag = sure ? `${i + 1} · ${f.label} ${pct(p)}` : `${i + 1} · unsure`;

    if (f.box && result.width && result.height) {
      // Percentages keep boxes on the face at any rendered size.
      const b = document.createElement("div");
      // Tags go inside boxes at the top edge and hang leftwards from boxes at the right edge.
      const inside = f.box.y < 0.08 * result.height ? " inside" : "";
      const right = f.box.x + f.box.w > 0.7 * result.width ? " right" : "";
      b.className = `box ${cls}${inside}${right}`;
      b.style.left = `${(100 * f.box.x) / result.width}%`;
      b.style.top = `${(100 * f.box.y) / result.height}%`;
      b.style.width = `${(100 * f.box.w) / result.width}%`;
      b.style.height = `${(100 * f.box.h) / result.height}%`;
      const t = document.createElement("span");
      t.className = "tag";
      t.textContent = tag;
      b.append(t);
      boxes.append(b);
    }

    const li = document.createElement("li");
    li.className = `face ${cls}`;
    const head = document.createElement("div");
    head.className = "face-head";
    const label = document.createElement("strong");
    label.textContent = `Face ${i + 1}: ${f.label}`;
    head.append(label);
    if (!sure) {
      const u = document.createElement("span");
      u.className = "badge";
      u.textContent = "unsure";
      u.title = "The model is close to 50/50 on this face; treat the label as a guess.";
      head.append(u);
    }
    if (f.face_source === "whole_image") {
      const w = document.createElement("span");
      w.className = "badge";
      w.textContent = "whole image";
      w.title = "No face was detected; the whole image was classified as one face crop.";
      head.append(w);
    }
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = pct(p);
    head.append(prob);

    // One bar, female share from the left and male share from the right.
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `female ${pct(f.prob_female)}, male ${pct(f.prob_male)}`);
    const fem = document.createElement("span");
    fem.className = "fem";
    fem.style.width = `${100 * f.prob_female}%`;
    bar.append(fem);
    const legend = document.createElement("div");
    legend.className = "legend";
    legend.textContent = `female ${pct(f.prob_female)} · male ${pct(f.prob_male)}`;
    li.append(head, bar, legend);
    list.append(li);
  });
  card.classList.add("done");
}

function clearAll() {
  state.queue.length = 0;
  for (const card of document.querySelectorAll("#results .card")) {
    if (card._url) URL.revokeObjectURL(card._url);
    card.remove();
  }
  state.total = 0;
  updateCount();
  showBanner("");
}

function setup() {
  const drop = $("#drop");
  const input = $("#files");
  $("#pick").addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") input.click();
  });
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = ""; // picking the same file again still fires change
  });
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    addFiles(e.dataTransfer && e.dataTransfer.files);
  });
  // A drop outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  window.addEventListener("paste", (e) => {
    const files = Array.from((e.clipboardData && e.clipboardData.files) || []);
    if (files.length) addFiles(files);
  });
  $("#clear").addEventListener("click", clearAll);
  loadModel();
}

document.addEventListener("DOMContentLoaded", setup);
