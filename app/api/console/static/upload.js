// The upload form: files (dropped or chosen) with per-file progress, or an audio URL;
// each accepted task joins the top of the list and is watched.

import { api, uploadTask } from "./api.js";
import { $, announce, h } from "./dom.js";
import { watch } from "./live.js";
import { state, taskName, TERMINAL } from "./state.js";
import { renderRow } from "./tasks.js";

const DROP_HINT = "Choose files, or drop them anywhere in this box.";

function selectedOptions() {
  const opts = {};
  const lang = $("#language").value.trim();
  const instr = $("#instruction").value.trim();
  if (lang) opts.language = lang;
  if (instr) opts.instruction = instr;
  if ($("#diarize").checked) opts.diarize = "true";
  if ($("#transcript-only").checked) opts.summarize = "false";
  return opts;
}

// A transcript someone already has goes up as `transcript`: no speech to text.
const TRANSCRIPT_TYPES = /\.(vtt|srt|txt|json)$/i;

function fieldFor(file) {
  return TRANSCRIPT_TYPES.test(file.name) ? "transcript" : "file";
}

async function uploadOne(file, opts) {
  const item = h("li", { class: "upload-item" });
  const bar = h("progress", { max: "100", value: "0", "aria-label": `Upload of ${file.name}` });
  const note = h("span", { class: "stage" }, "uploading 0%");
  item.append(h("span", { class: "upload-name" }, file.name), bar, note);
  $("#uploads").append(item);
  const form = new FormData();
  const field = fieldFor(file);
  form.append(field, file, file.name);
  for (const [k, v] of Object.entries(opts)) {
    // Speakers of a transcript are its own: diarization is for audio.
    if (!(field === "transcript" && k === "diarize")) form.append(k, v);
  }
  const answer = await uploadTask(form, (p) => {
    bar.value = p;
    note.textContent = `uploading ${p}%`;
  });
  if (answer === null) {
    note.textContent = "failed: network error";
    item.classList.add("failed");
    return null;
  }
  const { status, body } = answer;
  if (status !== 202) {
    note.textContent = `failed: ${body?.error?.message || status}`;
    item.classList.add("failed");
    return null;
  }
  bar.value = 100;
  note.textContent = "uploaded";
  item.dataset.taskId = body.id;
  setTimeout(() => item.remove(), 4000);
  return body;
}

async function accepted(created) {
  if (!created) return;
  let t;
  try {
    t = await api(`/v1/tasks/${created.id}`);
  } catch {
    t = { ...created, audio: {}, options: {} };
  }
  state.tasks.set(t.id, t);
  if (!state.order.includes(t.id)) {
    state.order.unshift(t.id);
    $("#task-list").prepend(renderRow(t));
  }
  $("#tasks-empty").hidden = true;
  if (!TERMINAL.has(t.status)) watch(t.id);
  announce(`Submitted ${taskName(t)}`);
}

export async function submitUpload(event) {
  event.preventDefault();
  const err = $("#upload-error");
  err.textContent = "";
  const files = [...$("#files").files];
  const url = $("#audio-url").value.trim();
  if (!files.length && !url) {
    err.textContent = "Choose or drop at least one file, or enter an audio URL.";
    $("#files").focus();
    return;
  }
  const limit = state.config?.max_upload_mb;
  const tooBig = files.filter((f) => limit && f.size > limit * 1024 * 1024);
  if (tooBig.length) {
    err.textContent = `Larger than ${limit} MiB: ${tooBig.map((f) => f.name).join(", ")}`;
    return;
  }
  const opts = selectedOptions();
  $("#files").value = "";
  $("#audio-url").value = "";
  $("#drop-hint").textContent = DROP_HINT;
  const jobs = [];
  if (url) {
    jobs.push(
      api("/v1/tasks", {
        method: "POST",
        body: JSON.stringify({ audio_url: url, ...opts }),
        headers: { "Content-Type": "application/json" },
      })
        .then(accepted)
        .catch((e) => (err.textContent = `${url}: ${e.message}`)),
    );
  }
  // Two uploads at a time: the rest of the browser's connections stay free for live updates.
  const queue = [...files];
  const lane = async () => {
    while (queue.length) await accepted(await uploadOne(queue.shift(), opts));
  };
  jobs.push(lane(), lane());
  await Promise.all(jobs);
}

export function setupDrop() {
  const drop = $("#drop");
  const input = $("#files");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer?.files?.length) {
      input.files = e.dataTransfer.files;
      input.dispatchEvent(new Event("change"));
    }
  });
  input.addEventListener("change", () => {
    const n = input.files.length;
    $("#drop-hint").textContent = n
      ? `${n} file${n > 1 ? "s" : ""} chosen: ${[...input.files].map((f) => f.name).join(", ")}`
      : DROP_HINT;
  });
}
