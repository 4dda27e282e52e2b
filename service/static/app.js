// The MRI classifier page: upload one image to /predict and show the probabilities and the check (with its
// reasons when it warns); ask /explain for the Grad-CAM only when the heatmap is wanted (it costs several times a
// prediction). No framework and nothing loaded from outside the service.
"use strict";

const CLASS_LABELS = {
  glioma: "Glioma",
  meningioma: "Meningioma",
  no_tumor: "No tumour",
  pituitary: "Pituitary",
};
const STATUS_TEXT = {
  400: "The file could not be read",
  401: "Not authorised",
  406: "The service cannot answer in this format",
  413: "The file is too large",
  415: "This file type is not supported",
  422: "The request was not valid",
  501: "Explanations are not available for this model",
  503: "The service is not ready or is busy; try again in a moment",
};

// What each reason of the answer's check means (service/checks/input_check.py); an unknown reason is shown by its name.
const REASON_TEXT = {
  colour_image: "The image is in colour; MRI slices are grayscale.",
  bright_background: "The image has no dark background around the anatomy, unlike an MRI slice.",
  low_confidence: "The model is unsure: its top probability is low.",
  unlike_training: "The image is unlike the images the model was trained on, so its answer is less reliable.",
};

const $ = (id) => document.getElementById(id);
// upload: a counter, so that a heatmap arriving for an earlier file is ignored; explaining: a /explain in flight.
const state = {
  imageUrl: null,
  overlayUrl: null,
  objectUrl: null,
  file: null,
  dicom: false,
  dicomUrls: [],
  upload: 0,
  explaining: null,
};
// The parts of /explain?output=dicom, in the order the service sends them.
const DICOM_PARTS = [
  { name: "structured-report.dcm", label: "Structured report (probabilities, predicted class)" },
  { name: "gradcam-secondary-capture.dcm", label: "Grad-CAM overlay (secondary capture, not for diagnosis)" },
];

function classLabel(name) {
  return CLASS_LABELS[name] || name;
}

function percent(p) {
  return `${(p * 100).toFixed(1)} %`;
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function showImage(src, caption) {
  const img = $("preview");
  img.src = src;
  img.alt = caption;
  img.hidden = false;
  $("preview-placeholder").hidden = true;
  $("preview-caption").textContent = caption;
}

function showPlaceholder(text) {
  const img = $("preview");
  img.hidden = true;
  img.removeAttribute("src");
  $("preview-placeholder").textContent = text;
  $("preview-placeholder").hidden = false;
  $("preview-caption").textContent = "";
}

function updateImage() {
  const toggle = $("heatmap-toggle");
  if (toggle.checked && state.overlayUrl) {
    showImage(state.overlayUrl, "Grad-CAM heatmap blended on the image the model sees");
  } else if (state.imageUrl) {
    showImage(state.imageUrl, "The image the model sees (padded to a square and resized)");
  } else if (state.objectUrl) {
    showImage(state.objectUrl, "Your image");
  } else if (state.dicom) {
    showPlaceholder("DICOM file: tick \u201cShow Grad-CAM heatmap\u201d to see the image the model sees.");
  }
}

async function onHeatmapToggle() {
  updateImage();
  if ($("heatmap-toggle").checked && state.file && !state.overlayUrl) await explain(state.upload);
}

async function isDicom(file) {
  if (/\.(dcm|dicom)$/i.test(file.name) || file.type === "application/dicom") return true;
  const head = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  return String.fromCharCode(...head) === "DICM";
}

async function showLocalPreview(file) {
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = null;
  state.imageUrl = null;
  state.overlayUrl = null;
  state.dicom = await isDicom(file);
  if (state.dicom) {
    showPlaceholder("DICOM file: the result appears after the analysis.");
    return;
  }
  state.objectUrl = URL.createObjectURL(file);
  showImage(state.objectUrl, "Your image");
}

function renderBars(probabilities, predicted) {
  const list = $("bars");
  list.replaceChildren();
  for (const [name, p] of Object.entries(probabilities)) {
    const item = document.createElement("li");
    item.className = name === predicted ? "bar-row predicted-row" : "bar-row";
    item.dataset.class = name;

    const label = document.createElement("span");
    label.className = "bar-label";
    label.id = `bar-label-${name}`;
    label.textContent = classLabel(name);

    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("role", "progressbar");
    track.setAttribute("aria-labelledby", label.id);
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", (p * 100).toFixed(1));
    track.setAttribute("aria-valuetext", percent(p));
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${Math.max(0, Math.min(100, p * 100))}%`;
    track.append(fill);

    const value = document.createElement("span");
    value.className = "bar-value";
    value.dataset.probability = String(p);
    value.textContent = percent(p);

    item.append(label, track, value);
    list.append(item);
  }
}

// The caution and every reason the check gives (one list item each), whenever the answer warns.
function renderWarning(check) {
  const box = $("warning");
  const list = $("warning-reasons");
  list.replaceChildren();
  if (!check || !check.warning) {
    box.hidden = true;
    $("warning-text").textContent = "";
    return;
  }
  let what = "The model is unsure about this image.";
  if (!check.likely_mri) {
    what = "This image does not look like a brain MRI slice.";
  } else if (check.familiar === false) {
    what = "This image is unlike the images the model was trained on.";
  }
  $("warning-text").textContent = `Caution: ${what} Do not rely on this result. Why:`;
  for (const reason of check.reasons || []) {
    const item = document.createElement("li");
    item.dataset.reason = reason;
    item.textContent = REASON_TEXT[reason] || reason;
    list.append(item);
  }
  box.hidden = false;
}

// A /predict answer (one image).
function render(answer) {
  const prediction = answer.predictions[0];
  $("predicted-class").textContent = classLabel(prediction.label);
  $("predicted-class").dataset.class = prediction.label;
  $("predicted-confidence").textContent = percent(prediction.confidence);
  renderBars(prediction.probabilities, prediction.label);
  renderWarning(prediction.check);
  $("result-model").textContent = `${answer.model_name} version ${answer.model_version}`;
  $("explain-line").hidden = true;
  updateImage();
  $("result").hidden = false;
  setStatus(`Done: ${classLabel(prediction.label)} ${percent(prediction.confidence)}.`);
}

// A /explain answer: the heatmap of the predicted class and the image the model saw.
function renderExplanation(answer) {
  const explanation = answer.explanation;
  $("explained-class").textContent = classLabel(explanation.class_name);
  $("explain-device").textContent = explanation.device;
  $("explain-line").hidden = false;
  state.imageUrl = `data:image/png;base64,${explanation.image_png}`;
  state.overlayUrl = `data:image/png;base64,${explanation.overlay_png}`;
  updateImage();
}

async function errorText(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  const reason = (body && (body.error || body.detail)) || response.statusText || "no reason given";
  const what = STATUS_TEXT[response.status] || "The request failed";
  return `${what} (HTTP ${response.status}): ${typeof reason === "string" ? reason : JSON.stringify(reason)}`;
}

// Ask /explain for the file of upload number `upload` (once; an answer for an earlier upload is dropped).
async function explain(upload) {
  if (state.explaining === upload) return;
  state.explaining = upload;
  const form = new FormData();
  form.append("file", state.file);
  setStatus("Computing the heatmap…");
  try {
    const headers = { Accept: "application/json", ...authHeaders() };
    const response = await fetch("/explain", { method: "POST", body: form, headers });
    if (upload !== state.upload) return;
    if (!response.ok) {
      setStatus("The heatmap failed.");
      showError(await errorText(response));
      return;
    }
    renderExplanation(await response.json());
    setStatus("Heatmap ready.");
  } catch (err) {
    if (upload === state.upload) {
      setStatus("The heatmap failed.");
      showError("The service could not be reached. Is it still running?");
    }
  } finally {
    if (state.explaining === upload) state.explaining = null;
  }
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function resetDicomResults(show) {
  for (const url of state.dicomUrls) URL.revokeObjectURL(url);
  state.dicomUrls = [];
  $("dicom-links").replaceChildren();
  $("download-dicom").disabled = false;
  $("dicom-results").hidden = !show;
}

function indexOf(bytes, pattern, from) {
  outer: for (let i = from; i <= bytes.length - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) {
      if (bytes[i + j] !== pattern[j]) continue outer;
    }
    return i;
  }
  return -1;
}

// The bodies of a multipart/related answer (each part: headers, a blank line, the body, CRLF, the delimiter).
function multipartBodies(buffer, contentType) {
  const match = /boundary="?([^";]+)"?/i.exec(contentType || "");
  if (!match) throw new Error("the answer is not multipart");
  const bytes = new Uint8Array(buffer);
  const encoder = new TextEncoder();
  const delimiter = encoder.encode(`--${match[1]}`);
  const blank = encoder.encode("\r\n\r\n");
  const bodies = [];
  let at = indexOf(bytes, delimiter, 0);
  while (at >= 0) {
    const next = indexOf(bytes, delimiter, at + delimiter.length);
    if (next < 0) break;
    const start = indexOf(bytes, blank, at + delimiter.length);
    if (start >= 0 && start < next) bodies.push(bytes.slice(start + blank.length, next - 2));
    at = next;
  }
  return bodies;
}

async function downloadDicom() {
  if (!state.file) return;
  clearError();
  resetDicomResults(true);
  $("download-dicom").disabled = true;
  setStatus("Making the DICOM results…");
  const form = new FormData();
  form.append("file", state.file);
  try {
    const headers = { Accept: 'multipart/related; type="application/dicom"', ...authHeaders() };
    const response = await fetch("/explain?output=dicom", { method: "POST", body: form, headers });
    if (!response.ok) {
      let reason = response.statusText;
      try {
        reason = (await response.json()).error || reason;
      } catch (err) {
        // keep the status text
      }
      throw new Error(`${STATUS_TEXT[response.status] || "The request failed"} (HTTP ${response.status}): ${reason}`);
    }
    const bodies = multipartBodies(await response.arrayBuffer(), response.headers.get("Content-Type"));
    bodies.forEach((body, index) => {
      const part = DICOM_PARTS[index] || { name: `result-${index + 1}.dcm`, label: `DICOM object ${index + 1}` };
      const url = URL.createObjectURL(new Blob([body], { type: "application/dicom" }));
      state.dicomUrls.push(url);
      const link = document.createElement("a");
      link.href = url;
      link.download = part.name;
      link.textContent = `${part.label} (${part.name})`;
      const item = document.createElement("li");
      item.append(link);
      $("dicom-links").append(item);
    });
    setStatus(`DICOM results ready: ${bodies.length} files to download below.`);
    const first = $("dicom-links").querySelector("a");
    if (first) first.focus();
  } catch (err) {
    setStatus("Failed.");
    showError(err.message || "The DICOM results could not be made.");
  } finally {
    $("download-dicom").disabled = false;
  }
}

async function analyse(file) {
  state.upload += 1;
  const upload = state.upload;
  clearError();
  $("result").hidden = true;
  state.file = null;
  resetDicomResults(false);
  setStatus("Analysing…");
  await showLocalPreview(file);
  const form = new FormData();
  form.append("file", file);
  let response;
  try {
    const headers = { Accept: "application/json", ...authHeaders() };
    response = await fetch("/predict", { method: "POST", body: form, headers });
  } catch (err) {
    setStatus("Failed.");
    showError("The service could not be reached. Is it still running?");
    return;
  }
  if (upload !== state.upload) return;
  if (!response.ok) {
    setStatus("Failed.");
    showError(await errorText(response));
    if (response.status === 401) {
      $("api-key-box").hidden = false;
      $("api-key").focus();
    }
    if (!state.objectUrl) showPlaceholder("No image to show.");
    return;
  }
  state.file = file;
  render(await response.json());
  resetDicomResults(state.dicom);
  if ($("heatmap-toggle").checked) await explain(upload);
}

async function loadModelInfo() {
  try {
    const response = await fetch("/readyz", { headers: { Accept: "application/json" } });
    const body = await response.json();
    if (response.ok && body.model) {
      const m = body.model;
      $("model-info").textContent = `${m.name} version ${m.version} (${m.runtime}, ${m.device})`;
    } else {
      $("model-info").textContent = `not ready: ${body.reason || body.status}`;
    }
  } catch (err) {
    $("model-info").textContent = "unknown (the service did not answer)";
  }
}

function setUp() {
  const input = $("file-input");
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) analyse(input.files[0]);
  });
  $("heatmap-toggle").addEventListener("change", onHeatmapToggle);
  $("download-dicom").addEventListener("click", downloadDicom);
  $("api-key").value = sessionStorage.getItem("mri-api-key") || "";
  $("api-key-box").hidden = !$("api-key").value;
  $("api-key").addEventListener("change", () => sessionStorage.setItem("mri-api-key", $("api-key").value.trim()));

  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) analyse(file);
  });
  // A file dropped outside the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  loadModelInfo();
}

document.addEventListener("DOMContentLoaded", setUp);
