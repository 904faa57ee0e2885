// The web page of `blip2 serve`: choose an image, caption it or ask about it, optionally see where
// the model looked. Plain JS, no build step; images travel as data URLs in JSON bodies
// (see docs/serving.md for the routes).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, last: null, generation: 0 };

function setStatus(text) { $("status").textContent = text || ""; }

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setBusy(busy) {
  const ready = state.image !== null && !busy;
  $("caption-btn").disabled = !ready;
  $("ask-btn").disabled = !ready;
  document.body.dataset.busy = busy ? "1" : "";
}

// POST a JSON body; resolves to the parsed reply, rejects with the server's one-line error message.
async function postJSON(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (error) {
    throw new Error(`Cannot reach the server (${error.message}).`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const message = data && data.error && data.error.message;
    const retry = response.headers.get("Retry-After");
    let line = message || text.trim().slice(0, 300) || response.statusText;
    if (response.status === 503 && retry) line += ` (the server is busy: try again in ${retry} s)`;
    throw new Error(`${path} answered ${response.status}: ${line}`);
  }
  if (data === null) throw new Error(`${path} answered with something that is not JSON.`);
  return data;
}

function clearOutputs() {
  state.last = null;
  $("result").hidden = true;
  $("answer").textContent = "";
  $("attention-box").hidden = true;
  $("heatmap").removeAttribute("src");
  showError("");
}

function loadFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image (its type is ${file.type}).`);
    return;
  }
  const reader = new FileReader();
  reader.onerror = () => showError(`Could not read ${file.name}.`);
  reader.onload = () => {
    state.generation += 1;
    state.image = reader.result;
    clearOutputs();
    const preview = $("preview");
    preview.onload = () => preview.classList.toggle("small", preview.naturalWidth < 224);
    preview.src = state.image;
    preview.hidden = false;
    $("drop-hint").hidden = true;
    $("file-name").textContent = `${file.name || "pasted image"} (${Math.ceil(file.size / 1024)} KiB)`;
    setStatus("");
    setBusy(false);
  };
  reader.readAsDataURL(file);
}

async function run(kind) {
  if (state.image === null) { showError("Choose an image first."); return; }
  const question = $("question").value.trim();
  if (kind === "answer" && !question) { showError("Type a question first."); $("question").focus(); return; }
  const generation = state.generation;
  showError("");
  setBusy(true);
  setStatus(kind === "caption" ? "Captioning…" : "Thinking…");
  try {
    const body = kind === "caption" ? { image: state.image } : { image: state.image, question };
    const data = await postJSON(kind === "caption" ? "/v1/caption" : "/v1/answer", body);
    if (generation !== state.generation) return;  // another image was chosen meanwhile
    state.last = kind === "caption" ? { kind, question: null } : { kind, question };
    $("result-label").textContent = kind === "caption" ? "Caption" : `Answer to “${question}”`;
    $("answer").textContent = kind === "caption" ? data.caption : data.answer;
    $("result").hidden = false;
    setStatus("");
    if ($("attention").checked) await showAttention();
  } catch (error) {
    if (generation === state.generation) { showError(error.message); setStatus(""); }
  } finally {
    if (generation === state.generation) setBusy(false);
  }
}

async function showAttention() {
  if (state.image === null) return;
  const last = state.last || { kind: "caption", question: null };
  const generation = state.generation;
  setStatus("Computing the attention map…");
  try {
    const body = last.question ? { image: state.image, question: last.question } : { image: state.image };
    const data = await postJSON("/v1/explain", body);
    if (generation !== state.generation || !$("attention").checked) return;
    $("heatmap").src = data.heatmap;
    $("heatmap-caption").textContent = data.text
      ? `Where the queries looked while producing “${data.text}”` : "Where the queries looked";
    $("attention-box").hidden = false;
    setStatus("");
  } catch (error) {
    if (generation === state.generation) { showError(error.message); setStatus(""); }
  }
}

function wireDropZone() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    loadFile(event.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
  $("file").addEventListener("change", () => loadFile($("file").files[0]));
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
    if (item) loadFile(item.getAsFile());
  });
}

async function showModel() {
  try {
    const response = await fetch("/health");
    const data = await response.json();
    $("model").textContent = data.model ? `model: ${data.model}` : "";
  } catch (_) {
    $("model").textContent = "server not reachable";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  wireDropZone();
  $("caption-btn").addEventListener("click", () => run("caption"));
  $("ask-form").addEventListener("submit", (event) => { event.preventDefault(); run("answer"); });
  $("attention").addEventListener("change", () => {
    if ($("attention").checked) { if (state.last) showAttention(); }
    else { $("attention-box").hidden = true; }
  });
  setBusy(false);
  showModel();
});
