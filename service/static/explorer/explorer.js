// digitcode explorer: the model's 2-D latent space, live, through the service's own API.
// Plain JavaScript module, no dependencies, no build step; every request goes to this service.
// The state is exposed as `window.explorer` (read-only use: tests and curious users).

const COLOURS = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#7f7f7f",
];
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const SIZE = 600; // the map's viewBox
const GRID = 12; // decoded digits per side of the grid overlay
const STRIP = 10; // digits along an interpolation
const CHUNK = 256; // rows per request for uploaded data
const PEN = 3; // pen width in the 32x32 bitmap's pixels (the UCI forms' strokes)
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

const state = {
  statusLine: "",
  key: sessionStorage.getItem("digitcode-api-key") || "",
  model: null,
  reference: null, // {vectors, labels, codes, reconstructions, errors, distances, is_outlier}
  extent: null, // {x0, x1, y0, y1} in latent units
  cursor: null, // [z1, z2] under the pointer or keyboard cursor
  decoded: null, // {latent, vector}: the last decoded cursor position
  hovered: null, // {set, index}
  drawn: null, // {vector, latent, reconstruction, error, distance, is_outlier}
  user: null, // {vectors, labels, codes, errors, name}
  picks: [],
  strip: null, // {latent, vectors}
  timings: { decode: [] }, // ms from pointer event to decoded digit shown
  ready: false,
};
window.explorer = state;

class KeyNeeded extends Error {}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// --- the API ------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One API call. A busy service (503) is asked again after its Retry-After, a few times.
async function api(path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.key) headers["X-API-Key"] = state.key;
  for (let attempt = 1; ; attempt++) {
    const response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) throw new KeyNeeded();
    if (response.status === 503 && attempt < 5) {
      const wait = Number(response.headers.get("Retry-After")) || 1;
      await sleep(Math.min(wait, 5) * 1000);
      continue;
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = answer.detail ?? answer.error ?? response.statusText;
      const text = Array.isArray(detail)
        ? detail.map((d) => (d.loc ? `${d.loc.join(" ")}: ` : "") + d.msg).join("; ")
        : String(detail);
      throw new ApiError(`${path}: ${response.status} ${text}`, response.status);
    }
    const version = response.headers.get("X-Model-Version");
    if (state.ready && version && version !== state.model.model_version) {
      // The service reloaded another model: the map shows the old one's codes.
      showStatus(`The service now serves model ${version}; reload the page for its map.`, true);
    } else if (state.ready) {
      showStatus(state.statusLine); // an earlier error is over
    }
    return answer;
  }
}

// Rows in chunks, answers concatenated by key. A service's batch limit may be smaller than a
// chunk: on 413 the chunk is halved and sent again.
let chunk = CHUNK;
async function inChunks(path, key, rows) {
  const out = {};
  let start = 0;
  while (start < rows.length) {
    let answer;
    try {
      answer = await api(path, { [key]: rows.slice(start, start + chunk) });
    } catch (error) {
      if (error.status === 413 && chunk > 1) {
        chunk = Math.max(1, Math.floor(Math.min(chunk, rows.length - start) / 2));
        continue;
      }
      if (error instanceof ApiError && start > 0) {
        error.message += ` (in rows ${start + 1} to ${Math.min(start + chunk, rows.length)})`;
      }
      throw error;
    }
    for (const [name, values] of Object.entries(answer)) {
      if (Array.isArray(values)) (out[name] ??= []).push(...values);
    }
    start += chunk;
  }
  return out;
}

function showStatus(text, error = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

// --- drawing helpers ---------------------------------------------------------------------

function drawDigit(canvas, vector) {
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(8, 8);
  vector.forEach((v, i) => {
    const shade = Math.round(255 - (Math.min(Math.max(v, 0), 16) / 16) * 255);
    image.data.set([shade, shade, shade, 255], i * 4);
  });
  ctx.putImageData(image, 0, 0);
}

function blankDigit(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

function rampColour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  const c = RAMP[i].map((a, k) => Math.round(a + (RAMP[i + 1][k] - a) * f));
  return `rgb(${c.join(",")})`;
}

const fmt = (x, digits = 4) => Number(x).toFixed(digits);

// Map coordinates <-> latent codes.
function toMap([z1, z2]) {
  const e = state.extent;
  return [((z1 - e.x0) / (e.x1 - e.x0)) * SIZE, SIZE - ((z2 - e.y0) / (e.y1 - e.y0)) * SIZE];
}

function toLatent(x, y) {
  const e = state.extent;
  return [e.x0 + (x / SIZE) * (e.x1 - e.x0), e.y0 + ((SIZE - y) / SIZE) * (e.y1 - e.y0)];
}

function eventToMap(event) {
  const box = $("map").getBoundingClientRect();
  return [((event.clientX - box.left) / box.width) * SIZE, ((event.clientY - box.top) / box.height) * SIZE];
}

function svg(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, v);
  return element;
}

// --- loading ------------------------------------------------------------------------------

async function load() {
  try {
    const [model, reference] = await Promise.all([api("model"), api("reference")]);
    state.model = model;
    const [encoded, reconstructed] = await scored(reference.vectors);
    state.reference = {
      ...reference,
      codes: encoded.latent,
      reconstructions: reconstructed.vectors,
      errors: reconstructed.errors,
      distances: reconstructed.distances,
      is_outlier: reconstructed.is_outlier,
      threshold: reconstructed.threshold,
    };
    const form = $("key-form");
    if (!form.hidden) {
      form.hidden = true;
      $("map").focus(); // where the user was going
    }
    setExtent(encoded.latent);
    drawReference();
    drawLegend();
    state.statusLine =
      `Model ${state.model.model_version} (${state.model.preset ?? "model"}): ` +
      `${reference.labels.length} validation digits it was not fitted on.`;
    showStatus(state.statusLine);
    state.ready = true;
    state.timings.ready = performance.now(); // ms since navigation started
    document.body.dataset.ready = "true";
    // The centre's digit, at once: the panel is not empty, and the connection is warm for the
    // pointer's first move (not timed: no pointer moved).
    const e = state.extent;
    decodeAt([(e.x0 + e.x1) / 2, (e.y0 + e.y1) / 2], null);
  } catch (error) {
    if (error instanceof KeyNeeded) {
      askForKey(state.key ? "That key was refused." : "");
      showStatus("This service needs its API key.");
      return;
    }
    showStatus(`Could not load the model: ${error.message}. Reload the page to try again.`, true);
  }
}

// Codes and reconstructions (with errors and outlier flags) of pixel rows, in chunks.
function scored(vectors) {
  return Promise.all([inChunks("encode", "vectors", vectors), inChunks("reconstruct", "vectors", vectors)]);
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("key-error").textContent = message;
  $("api-key").focus();
}

function setExtent(codes) {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [a, b] of codes) {
    x0 = Math.min(x0, a); x1 = Math.max(x1, a);
    y0 = Math.min(y0, b); y1 = Math.max(y1, b);
  }
  // One scale for both axes, so that distances on the map are distances between codes.
  const half = 0.54 * Math.max(x1 - x0, y1 - y0, 1e-6);
  const [cx, cy] = [(x0 + x1) / 2, (y0 + y1) / 2];
  state.extent = { x0: cx - half, x1: cx + half, y0: cy - half, y1: cy + half };
}

function drawReference() {
  const group = $("reference-points");
  group.replaceChildren();
  const { codes, labels } = state.reference;
  codes.forEach((code, i) => {
    const [x, y] = toMap(code);
    group.append(svg("circle", {
      cx: x, cy: y, r: 3.5, fill: COLOURS[labels[i]],
      "data-set": "reference", "data-index": i, "data-label": labels[i],
    }));
  });
}

function drawLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  COLOURS.forEach((colour, digit) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour;
    item.append(swatch, String(digit));
    legend.append(item);
  });
}

// --- the cursor: decode anywhere ----------------------------------------------------------

let pending = null; // the newest position not yet sent
let inFlight = 0;
let sentSeq = 0;
let shownSeq = 0;
const IN_FLIGHT = 2; // requests at once: the newest position need not wait for the one before

function decodeAt(latent, started) {
  state.cursor = latent;
  pending = { latent, started };
  drawCursor();
  launch();
}

// The newest position wins: at most IN_FLIGHT requests, no queue of stale positions, and an
// answer older than the one shown is dropped.
function launch() {
  while (pending && inFlight < IN_FLIGHT) {
    const job = { ...pending, seq: ++sentSeq };
    pending = null;
    inFlight += 1;
    api("decode", { latent: [job.latent] })
      .then((answer) => {
        if (job.seq < shownSeq) return;
        shownSeq = job.seq;
        const vector = answer.vectors[0];
        drawDigit($("decoded"), vector);
        state.decoded = { latent: job.latent, vector };
        $("decoded-info").textContent = `z = (${fmt(job.latent[0])}, ${fmt(job.latent[1])})`;
        if (job.started !== null) state.timings.decode.push(performance.now() - job.started);
      })
      .catch(handle)
      .finally(() => {
        inFlight -= 1;
        launch();
      });
  }
}

function drawCursor() {
  const overlay = $("overlay");
  overlay.querySelector(".cursor")?.remove();
  if (!state.cursor) return;
  const [x, y] = toMap(state.cursor);
  overlay.append(svg("circle", { class: "cursor", cx: x, cy: y, r: 7 }));
}

function showPoint(set, index) {
  const map = $("map");
  map.querySelector("circle.hovered")?.classList.remove("hovered");
  state.hovered = { set, index };
  map.querySelector(`circle[data-set="${set}"][data-index="${index}"]`)?.classList.add("hovered");
  const info = $("point-info");
  if (set === "reference") {
    const r = state.reference;
    drawDigit($("point-digit"), r.vectors[index]);
    drawDigit($("point-recon"), r.reconstructions[index]);
    info.textContent =
      `Digit ${r.labels[index]} (validation row ${index + 1}); error ${fmt(r.errors[index])}` +
      (r.is_outlier[index] ? ", an outlier" : "");
  } else {
    const u = state.user;
    drawDigit($("point-digit"), u.vectors[index]);
    drawDigit($("point-recon"), u.reconstructions[index]);
    const label = u.labels ? `label ${u.labels[index]}, ` : "";
    info.textContent = `${u.name} row ${index + 1}: ${label}error ${fmt(u.errors[index])}`;
  }
}

function nearestReference(latent, within) {
  let best = -1;
  let bestDistance = within;
  state.reference.codes.forEach((code, i) => {
    const [x, y] = toMap(code);
    const [cx, cy] = toMap(latent);
    const d = Math.hypot(x - cx, y - cy);
    if (d < bestDistance) [best, bestDistance] = [i, d];
  });
  return best;
}

function onPointerMove(event) {
  if (!state.ready) return;
  const started = performance.now();
  const [x, y] = eventToMap(event);
  decodeAt(toLatent(x, y), started);
  const target = event.target;
  if (target instanceof SVGCircleElement && target.dataset.set) {
    showPoint(target.dataset.set, Number(target.dataset.index));
  }
}

function onMapKey(event) {
  if (!state.ready) return;
  const e = state.extent;
  const step = (event.shiftKey ? 0.1 : 0.02) * (e.x1 - e.x0);
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
  const cursor = state.cursor ?? [(e.x0 + e.x1) / 2, (e.y0 + e.y1) / 2];
  if (event.key in moves) {
    event.preventDefault();
    const [dx, dy] = moves[event.key];
    const next = [
      Math.min(Math.max(cursor[0] + dx, e.x0), e.x1),
      Math.min(Math.max(cursor[1] + dy, e.y0), e.y1),
    ];
    decodeAt(next, performance.now());
    const near = nearestReference(next, 12);
    if (near >= 0) showPoint("reference", near);
  } else if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    pick(cursor);
  }
}

// --- the grid of decoded digits -------------------------------------------------------------

let gridSent = 0;
async function toggleGrid() {
  const canvas = $("grid");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, SIZE, SIZE);
  const sent = ++gridSent;
  if (!$("grid-toggle").checked || !state.ready) return;
  const cell = SIZE / GRID;
  const centres = [];
  for (let row = 0; row < GRID; row++) {
    for (let col = 0; col < GRID; col++) centres.push([(col + 0.5) * cell, (row + 0.5) * cell]);
  }
  try {
    const answer = await inChunks("decode", "latent", centres.map(([x, y]) => toLatent(x, y)));
    if (sent !== gridSent) return; // switched off, or on again, since
    const tile = document.createElement("canvas");
    tile.width = tile.height = 8;
    ctx.imageSmoothingEnabled = false;
    answer.vectors.forEach((vector, i) => {
      drawDigit(tile, vector);
      const [x, y] = centres[i];
      ctx.drawImage(tile, x - cell / 2 + 2, y - cell / 2 + 2, cell - 4, cell - 4);
    });
  } catch (error) {
    handle(error);
  }
}

// --- interpolation --------------------------------------------------------------------------

function onMapClick(event) {
  if (!state.ready) return;
  const target = event.target;
  if (target instanceof SVGCircleElement && target.dataset.set) {
    const set = target.dataset.set === "reference" ? state.reference : state.user;
    pick(set.codes[Number(target.dataset.index)]);
  } else {
    const [x, y] = eventToMap(event);
    pick(toLatent(x, y));
  }
}

let pickSent = 0;
async function pick(latent) {
  const sent = ++pickSent;
  state.picks = state.picks.length >= 2 ? [latent] : [...state.picks, latent];
  const overlay = $("overlay");
  overlay.querySelectorAll(".pick, .segment").forEach((e) => e.remove());
  const points = state.picks.map(toMap);
  if (points.length === 2) {
    const [[x1, y1], [x2, y2]] = points;
    overlay.append(svg("line", { class: "segment", x1, y1, x2, y2 }));
  }
  for (const [x, y] of points) overlay.append(svg("circle", { class: "pick", cx: x, cy: y, r: 6 }));
  const info = $("interp-info");
  if (state.picks.length < 2) {
    info.textContent = "One end picked; pick the other.";
    $("strip").replaceChildren();
    state.strip = null;
    return;
  }
  const [a, b] = state.picks;
  const codes = Array.from({ length: STRIP }, (_, i) => {
    const t = i / (STRIP - 1);
    return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t];
  });
  try {
    const answer = await inChunks("decode", "latent", codes);
    if (sent !== pickSent) return; // another pick since
    state.strip = { latent: codes, vectors: answer.vectors };
    const strip = $("strip");
    strip.replaceChildren();
    answer.vectors.forEach((vector, i) => {
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 8;
      canvas.setAttribute("role", "listitem");
      canvas.setAttribute("aria-label", `step ${i + 1} of ${STRIP}`);
      drawDigit(canvas, vector);
      strip.append(canvas);
    });
    info.textContent =
      `From (${fmt(a[0], 3)}, ${fmt(a[1], 3)}) to (${fmt(b[0], 3)}, ${fmt(b[1], 3)}), ${STRIP} steps.`;
  } catch (error) {
    handle(error);
  }
}

// --- the drawing pad ------------------------------------------------------------------------

// sent: drawings sent to score; pen: the keyboard's pen (canvas pixels, and whether it inks).
const pad = { drawing: false, last: null, timer: 0, sent: 0, pen: { x: 128, y: 128, down: false } };
state.pad = pad;

function padContext() {
  const ctx = $("pad").getContext("2d", { willReadFrequently: true });
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.lineWidth = (PEN * $("pad").width) / 32;
  ctx.strokeStyle = "#000";
  return ctx;
}

function padPoint(event) {
  const canvas = $("pad");
  const box = canvas.getBoundingClientRect();
  return [
    ((event.clientX - box.left) / box.width) * canvas.width,
    ((event.clientY - box.top) / box.height) * canvas.height,
  ];
}

function onPadDown(event) {
  event.preventDefault();
  $("pad").setPointerCapture(event.pointerId);
  pad.drawing = true;
  pad.last = padPoint(event);
  stroke(pad.last, pad.last);
}

function onPadMove(event) {
  if (!pad.drawing) return;
  const point = padPoint(event);
  stroke(pad.last, point);
  pad.last = point;
}

function onPadUp() {
  if (!pad.drawing) return;
  pad.drawing = false;
  clearTimeout(pad.timer); // scored now, for the finished stroke
  pad.timer = 0;
  scoreDrawing();
}

function stroke(from, to) {
  const ctx = padContext();
  ctx.beginPath();
  ctx.moveTo(...from);
  ctx.lineTo(...to);
  ctx.stroke();
  // While drawing, score the drawing a few times a second.
  if (!pad.timer) pad.timer = setTimeout(() => { pad.timer = 0; scoreDrawing(); }, 150);
}

// The UCI preprocessing (NIST's): the drawing cropped to its ink, scaled to fill a 32x32 bitmap
// (keeping its proportions) and centred; then on pixels counted in 4x4 blocks (0..16).
function drawingVector() {
  const canvas = $("pad");
  const size = canvas.width;
  const { data } = padContext().getImageData(0, 0, size, size);
  const inked = (x, y) => data[(y * size + x) * 4 + 3] >= 128;
  let [x0, x1, y0, y1] = [size, -1, size, -1];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      if (inked(x, y)) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x);
        y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  const vector = new Array(64).fill(0);
  if (x1 < 0) return vector;
  const [w, h] = [x1 - x0 + 1, y1 - y0 + 1];
  const scale = 32 / Math.max(w, h); // bitmap pixels per canvas pixel
  const [left, top] = [(32 - w * scale) / 2, (32 - h * scale) / 2];
  for (let row = 0; row < 32; row++) {
    for (let col = 0; col < 32; col++) {
      // A bitmap pixel is on when the drawing covers the canvas point at its centre.
      const x = Math.floor(x0 + (col + 0.5 - left) / scale);
      const y = Math.floor(y0 + (row + 0.5 - top) / scale);
      if (x >= x0 && x <= x1 && y >= y0 && y <= y1 && inked(x, y)) {
        vector[(row >> 2) * 8 + (col >> 2)] += 1;
      }
    }
  }
  return vector;
}

async function scoreDrawing() {
  if (!state.ready) return;
  const vector = drawingVector();
  drawDigit($("drawn"), vector);
  if (vector.every((v) => v === 0)) return;
  const sent = ++pad.sent;
  try {
    const [encoded, reconstructed] = await scored([vector]);
    if (sent !== pad.sent) return; // a newer drawing's answers are on their way
    const drawn = {
      seq: sent,
      vector,
      latent: encoded.latent[0],
      reconstruction: reconstructed.vectors[0],
      error: reconstructed.errors[0],
      distance: reconstructed.distances[0],
      is_outlier: reconstructed.is_outlier[0],
    };
    state.drawn = drawn;
    drawDigit($("drawn-recon"), drawn.reconstruction);
    const overlay = $("overlay");
    overlay.querySelector(".drawn")?.remove();
    const [x, y] = toMap(drawn.latent);
    overlay.append(svg("rect", { class: "drawn", x: x - 6, y: y - 6, width: 12, height: 12, transform: `rotate(45 ${x} ${y})` }));
    const info = $("drawn-info");
    info.replaceChildren(
      `At (${fmt(drawn.latent[0], 3)}, ${fmt(drawn.latent[1], 3)}); error ${fmt(drawn.error)}, ` +
      `distance ${fmt(drawn.distance)}. `,
    );
    const verdict = document.createElement("span");
    verdict.textContent = drawn.is_outlier ? "An outlier: unlike the digits the model knows." : "Not an outlier.";
    if (drawn.is_outlier) verdict.className = "outlier";
    info.append(verdict);
  } catch (error) {
    handle(error);
  }
}

// The keyboard's pen: arrows move it (a bitmap pixel a press; Shift: four), Space lowers or
// lifts it, Enter scores the drawing, Delete clears it.
function onPadKey(event) {
  const canvas = $("pad");
  const step = ((event.shiftKey ? 4 : 1) * canvas.width) / 32;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  const pen = pad.pen;
  if (event.key in moves) {
    const [dx, dy] = moves[event.key];
    const from = [pen.x, pen.y];
    pen.x = Math.min(Math.max(pen.x + dx, 0), canvas.width - 1);
    pen.y = Math.min(Math.max(pen.y + dy, 0), canvas.height - 1);
    if (pen.down) stroke(from, [pen.x, pen.y]);
  } else if (event.key === " ") {
    pen.down = !pen.down;
    if (pen.down) stroke([pen.x, pen.y], [pen.x, pen.y]);
  } else if (event.key === "Enter") {
    clearTimeout(pad.timer);
    pad.timer = 0;
    scoreDrawing();
  } else if (event.key === "Delete" || event.key === "Backspace") {
    clearPad();
  } else {
    return;
  }
  event.preventDefault();
  $("pen-info").textContent =
    `Pen ${pen.down ? "down" : "up"} at ${Math.round((pen.x / canvas.width) * 32)}, ` +
    `${Math.round((pen.y / canvas.height) * 32)} of 32.`;
}

function clearPad() {
  pad.sent += 1; // answers still on their way are for the old drawing
  const canvas = $("pad");
  padContext().clearRect(0, 0, canvas.width, canvas.height);
  blankDigit($("drawn"));
  blankDigit($("drawn-recon"));
  $("overlay").querySelector(".drawn")?.remove();
  $("drawn-info").textContent = "";
  state.drawn = null;
}

// --- your data ------------------------------------------------------------------------------

// The CLI's text format (digitcode/cli.py read_rows): one row per line, blank lines skipped;
// tabs separate the columns when the first line has tabs and no commas, else commas; the first
// line is a header when one of its fields is a word (letters, not a number); 64 pixels a row in
// [0, 16], and a 65th column, a label, passed through. Returns {vectors, labels} or throws,
// naming the line and column.
const isNumber = (field) => field.trim() !== "" && Number.isFinite(Number(field));
const isWord = (field) => /[a-z]/i.test(field) && !isNumber(field);

function parseCsv(text) {
  const lines = text.split(/\r\n|\r|\n/).map((line, i) => [i + 1, line]).filter(([, l]) => l.trim());
  if (!lines.length) throw new Error("no rows");
  const first = lines[0][1];
  const sep = first.includes("\t") && !first.includes(",") ? "\t" : ",";
  const rows = first.split(sep).some(isWord) ? lines.slice(1) : lines;
  if (!rows.length) throw new Error("no rows after the header line");
  const width = rows[0][1].split(sep).length;
  const vectors = [];
  const labels = [];
  for (const [line, text] of rows) {
    const fields = text.split(sep);
    if (fields.length !== 64 && fields.length !== 65) {
      throw new Error(`line ${line}: ${fields.length} columns, expected 64 pixels (and a label)`);
    }
    if (fields.length !== width) {
      throw new Error(`line ${line}: ${fields.length} columns, but line ${rows[0][0]} has ${width}`);
    }
    fields.forEach((field, i) => {
      const where = `line ${line}, column ${i + 1}`;
      if (!field.trim()) throw new Error(`${where}: empty`);
      if (!isNumber(field)) throw new Error(`${where}: ${JSON.stringify(field.trim())} is not a number`);
      const value = Number(field);
      if (i < 64 && !(value >= 0 && value <= 16)) {
        throw new Error(`${where}: value ${value} is outside [0, 16]`);
      }
    });
    const numbers = fields.map(Number);
    vectors.push(numbers.slice(0, 64));
    if (width === 65) labels.push(numbers[64]);
  }
  return { vectors, labels: width === 65 ? labels : null };
}

let fileSent = 0;
async function onFile() {
  const file = $("csv-file").files[0];
  const info = $("data-info");
  if (!file || !state.ready) return;
  const sent = ++fileSent;
  info.classList.remove("outlier");
  info.textContent = `Reading ${file.name}…`;
  try {
    const { vectors, labels } = parseCsv(await file.text());
    const [encoded, reconstructed] = await scored(vectors);
    if (sent !== fileSent) return; // another file was chosen since
    state.user = {
      name: file.name, vectors, labels,
      codes: encoded.latent,
      reconstructions: reconstructed.vectors,
      errors: reconstructed.errors,
    };
    const colourBy = $("colour-by");
    colourBy.disabled = !labels;
    if (!labels) colourBy.value = "error";
    drawUser();
    $("download").disabled = false;
    const outliers = reconstructed.is_outlier.filter(Boolean).length;
    info.textContent = `${file.name}: ${vectors.length} rows on the map` +
      (labels ? ", with labels" : "") + `; ${outliers} outliers.`;
  } catch (error) {
    if (sent !== fileSent) return;
    if (error instanceof KeyNeeded) {
      info.textContent = `${file.name}: the service needs its API key.`;
      return handle(error);
    }
    info.textContent = `${file.name}: ${error.message}`;
    info.classList.add("outlier");
  }
}

function drawUser() {
  const group = $("user-points");
  group.replaceChildren();
  const u = state.user;
  if (!u) return;
  const byError = $("colour-by").value === "error" || !u.labels;
  const lo = u.errors.reduce((a, b) => Math.min(a, b), Infinity);
  const hi = u.errors.reduce((a, b) => Math.max(a, b), -Infinity);
  u.codes.forEach((code, i) => {
    const [x, y] = toMap(code);
    const fill = byError
      ? rampColour((u.errors[i] - lo) / (hi - lo || 1))
      : COLOURS[((Math.round(u.labels[i]) % 10) + 10) % 10];
    group.append(svg("circle", {
      class: "user", cx: x, cy: y, r: 4.5, fill,
      "data-set": "user", "data-index": i,
    }));
  });
  $("error-legend").hidden = !byError;
  $("error-min").textContent = fmt(lo);
  $("error-max").textContent = fmt(hi);
}

function downloadCodes() {
  const u = state.user;
  if (!u) return;
  const rows = u.codes.map((code, i) => (u.labels ? [...code, u.labels[i]] : code).join(","));
  const blob = new Blob([`z1,z2${u.labels ? ",label" : ""}\n${rows.join("\n")}\n`], { type: "text/csv" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = u.name.replace(/\.[^.]*$/, "") + "-codes.csv";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// --- wiring -------------------------------------------------------------------------------

function handle(error) {
  if (error instanceof KeyNeeded) {
    state.ready = false;
    askForKey("The service asks for its API key.");
    return;
  }
  const status = $("status");
  status.textContent = error.message;
  status.classList.add("error");
}

function start() {
  const map = $("map");
  map.addEventListener("pointermove", onPointerMove);
  map.addEventListener("click", onMapClick);
  map.addEventListener("keydown", onMapKey);
  $("grid-toggle").addEventListener("change", toggleGrid);
  $("colour-by").addEventListener("change", drawUser);
  const canvas = $("pad");
  canvas.addEventListener("pointerdown", onPadDown);
  canvas.addEventListener("pointermove", onPadMove);
  canvas.addEventListener("pointerup", onPadUp);
  canvas.addEventListener("pointercancel", onPadUp);
  canvas.addEventListener("keydown", onPadKey);
  $("clear-pad").addEventListener("click", clearPad);
  $("csv-file").addEventListener("change", onFile);
  $("download").addEventListener("click", downloadCodes);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value;
    sessionStorage.setItem("digitcode-api-key", state.key);
    load();
  });
  load();
}

start();
