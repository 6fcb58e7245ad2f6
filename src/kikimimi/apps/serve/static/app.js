// The page of `kikimimi serve`: text search, drop a file for similar sounds and tags, edit the label list.
// Talks only to the server that sent it (same origin); nothing is loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const LABELS_KEY = "kikimimi.labels";
let defaultLabels = [];

function seconds(s) {
  if (s === null || s === undefined) return "";
  const m = Math.floor(s / 60), r = s - 60 * m;
  return `${m}:${r.toFixed(1).padStart(4, "0")}`;
}

async function api(url, options) {
  const response = await fetch(url, Object.assign({credentials: "same-origin"}, options || {}));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    let reason = (body && body.error) || `${response.status} ${response.statusText}`;
    if (response.status === 503) reason += ` (retry in ${response.headers.get("Retry-After") || "a few"} s)`;
    throw new Error(reason);
  }
  return body;
}

function resultRow(hit) {
  const li = document.createElement("li");
  li.className = "result";
  li.dataset.key = hit.key;
  const segment = hit.end_s === null ? "whole file" : `${seconds(hit.start_s)}–${seconds(hit.end_s)}`;
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = `${hit.rank}.`;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = hit.name;
  name.title = hit.key;
  const meta = document.createElement("span");
  meta.className = "meta";
  const matched = hit.matched > 1 ? ` · ${hit.matched} matching segments` : "";
  meta.textContent = `score ${hit.score.toFixed(3)} · ${segment}${matched}`;
  const img = document.createElement("img");
  img.src = hit.spectrogram_url;
  img.alt = `Spectrogram of ${hit.name}, ${segment}`;
  img.loading = "lazy";
  img.width = 160;
  img.height = 48;
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "none";
  audio.src = `${hit.audio_url}#t=${hit.start_s}`;
  audio.dataset.start = hit.start_s;
  audio.setAttribute("aria-label", `Play ${hit.name} from ${seconds(hit.start_s)}`);
  audio.addEventListener("loadedmetadata", () => {
    const start = parseFloat(audio.dataset.start || "0");
    if (audio.currentTime < start) audio.currentTime = start;
  });
  li.append(rank, name, meta, img, audio, describePanel(hit, audio));
  return li;
}

// A "Describe" button and its panel: the file's timeline and a short paragraph (GET /api/describe), fetched on
// the first opening; a part of the timeline plays the file from its start.
function describePanel(hit, audio) {
  const box = document.createElement("div");
  box.className = "describe";
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Describe";
  button.setAttribute("aria-label", `Describe ${hit.name}: what is heard when`);
  button.setAttribute("aria-expanded", "false");
  const panel = document.createElement("div");
  panel.className = "describe-panel";
  panel.hidden = true;
  panel.setAttribute("role", "region");
  panel.setAttribute("aria-label", `Description of ${hit.name}`);
  panel.setAttribute("aria-live", "polite");
  button.addEventListener("click", async () => {
    const open = panel.hidden;
    panel.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (!open || panel.dataset.loaded) return;
    panel.textContent = "Listening to the whole file…";
    panel.setAttribute("aria-busy", "true");
    try {
      const d = await api(`/api/describe?key=${encodeURIComponent(hit.key)}`);
      const list = document.createElement("ol");
      list.className = "timeline";
      list.setAttribute("aria-label", `Timeline of ${hit.name}`);
      for (const part of d.parts) {
        const li = document.createElement("li");
        const at = document.createElement("button");
        at.type = "button";
        at.className = "span";
        at.textContent = part.span;
        at.setAttribute("aria-label", `Play ${hit.name} from ${part.span.split("–")[0]}`);
        at.addEventListener("click", () => {
          audio.dataset.start = part.start_s;
          audio.currentTime = part.start_s;
          audio.play().catch(() => {});
        });
        const what = document.createElement("span");
        what.className = "sounds";
        what.textContent = ` ${part.sounds.join(", ")} (${Math.round(part.rms_dbfs)} dBFS)`;
        li.append(at, what);
        list.append(li);
      }
      const paragraph = document.createElement("p");
      paragraph.className = "paragraph";
      paragraph.textContent = d.paragraph;
      panel.replaceChildren(list, paragraph);
      panel.dataset.loaded = "1";
    } catch (e) {
      panel.textContent = `Cannot describe ${hit.name}: ${e.message}`;
    } finally {
      panel.removeAttribute("aria-busy");
    }
  });
  box.append(button, panel);
  return box;
}

function showResults(list, hits, emptyText) {
  list.replaceChildren(...hits.map(resultRow));
  if (!hits.length) {
    const li = document.createElement("li");
    li.textContent = emptyText;
    list.append(li);
  }
}

function currentLabels() {
  return $("labels").value.split("\n").map((s) => s.trim()).filter(Boolean);
}

async function refreshStatus() {
  try {
    const s = await api("/api/status");
    const scan = s.scan.running ? " · re-scanning…" : (s.scan.error ? ` · last re-scan failed: ${s.scan.error}` : "");
    $("status").textContent = `${s.files} files, ${s.segments} segments indexed (${s.vectors.kind}` +
      `${s.vectors.exact ? ", exact" : ", approximate"})${scan}`;
    $("status").dataset.files = s.files;
    return s;
  } catch (e) {
    $("status").textContent = `Cannot reach the server: ${e.message}`;
    return null;
  }
}

async function search(event) {
  event.preventDefault();
  const q = $("query").value.trim();
  const top = $("top").value || "10";
  $("search-message").textContent = "";
  if (!q) return;
  $("results").setAttribute("aria-busy", "true");
  try {
    const data = await api(`/api/search?q=${encodeURIComponent(q)}&top=${encodeURIComponent(top)}`);
    showResults($("results"), data.results, "Nothing indexed yet.");
  } catch (e) {
    $("search-message").textContent = e.message;
  } finally {
    $("results").removeAttribute("aria-busy");
  }
}

async function analyse(file) {
  $("example-message").textContent = "";
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("labels", currentLabels().join("\n"));
  form.append("top", $("top").value || "10");
  $("drop").textContent = `Analysing ${file.name}…`;
  try {
    const data = await api("/api/example", {method: "POST", body: form});
    $("example").hidden = false;
    $("example-name").textContent = file.name;
    const tags = (data.tags || []).slice(0, 10).map((t) => {
      const li = document.createElement("li");
      li.textContent = `${t.label} — ${(100 * t.probability).toFixed(1)} %`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(2, Math.round(200 * t.probability))}px`;
      bar.setAttribute("aria-hidden", "true");
      li.append(bar);
      return li;
    });
    $("tags").replaceChildren(...tags);
    $("caption").hidden = !data.caption;
    $("caption").textContent = data.caption ? `“${data.caption}”` : "";
    showResults($("similar"), data.results || [], "Nothing indexed yet.");
  } catch (e) {
    $("example-message").textContent = `${file.name}: ${e.message}`;
  } finally {
    $("drop").textContent = "Drop an audio file here, or press Enter to choose one";
  }
}

function setUpDrop() {
  const drop = $("drop"), input = $("file");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { if (input.files.length) analyse(input.files[0]); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) analyse(files[0]);
  });
}

async function setUpLabels() {
  try {
    defaultLabels = (await api("/api/labels")).labels;
  } catch (e) {
    defaultLabels = [];
  }
  const saved = window.localStorage.getItem(LABELS_KEY);
  $("labels").value = saved !== null ? saved : defaultLabels.join("\n");
  $("labels").addEventListener("input", () => window.localStorage.setItem(LABELS_KEY, $("labels").value));
  $("labels-reset").addEventListener("click", () => {
    window.localStorage.removeItem(LABELS_KEY);
    $("labels").value = defaultLabels.join("\n");
  });
}

async function rescan() {
  try {
    await api("/api/rescan", {method: "POST"});
    $("status").textContent = "Re-scanning the folder…";
    const timer = setInterval(async () => {
      const s = await refreshStatus();
      if (!s || !s.scan.running) clearInterval(timer);
    }, 1000);
  } catch (e) {
    $("status").textContent = `Re-scan: ${e.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", search);
  $("rescan").addEventListener("click", rescan);
  setUpDrop();
  setUpLabels();
  refreshStatus();
});
