// The aipp web console: plain ES module, no build step, no third-party code.
// Everything goes through the public API with the caller's key; the DOM is built
// with textContent only (never innerHTML), so transcript text cannot inject markup.

const KEY_STORE = "aipp.apiKey"; // sessionStorage: gone when the tab closes
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const MAX_STREAMS = 3; // browsers allow 6 connections per host; leave room for uploads
const PAGE = 20;

const $ = (sel) => document.querySelector(sel);
const state = {
  config: null,
  key: sessionStorage.getItem(KEY_STORE),
  tasks: new Map(), // id -> task view (as the API returns it)
  order: [], // ids, newest first
  cursor: null,
  streams: new Map(), // id -> AbortController
  current: null, // the task on the result page
  audioUrl: null,
  pendingSeek: null,
  segments: [], // [{start, end, el, id}]
};

// --- small helpers --------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

function when(iso) {
  const d = new Date(iso);
  return h("time", { datetime: iso, title: d.toISOString() }, d.toLocaleString());
}

function announce(text) {
  const el = $("#announce");
  el.textContent = "";
  // A fresh text node each time, so screen readers read repeated messages too.
  setTimeout(() => (el.textContent = text), 30);
}

function taskName(t) {
  return t.audio?.filename || t.audio?.url || t.id;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}

async function api(path, { method = "GET", body, headers = {}, raw = false, signal } = {}) {
  const res = await fetch(path, { method, body, headers: authHeaders(headers), signal });
  if (res.status === 401) {
    forgetKey("Your API key was not accepted; enter a valid key.");
    throw new ApiError(401, "unauthorized", "API key required");
  }
  if (!res.ok) {
    let code = "http_" + res.status;
    let message = res.statusText || "request failed";
    try {
      const err = (await res.json()).error;
      code = err.code || code;
      message = err.message || message;
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, code, message);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

// --- auth -----------------------------------------------------------------------

function forgetKey(message = "") {
  state.key = null;
  sessionStorage.removeItem(KEY_STORE);
  resetData();
  $("#forget-key").hidden = true;
  if (state.config?.auth_required || message) showView("key", message);
}

function resetData() {
  for (const ctrl of state.streams.values()) ctrl.abort();
  state.streams.clear();
  state.tasks.clear();
  state.order = [];
  state.cursor = null;
  $("#task-list").replaceChildren();
  $("#search-results").replaceChildren();
  clearPlayer();
}

async function submitKey(event) {
  event.preventDefault();
  const input = $("#api-key");
  const key = input.value.trim();
  const err = $("#key-error");
  err.textContent = "";
  input.removeAttribute("aria-invalid");
  const res = await fetch("/v1/tasks?limit=1", { headers: { Authorization: `Bearer ${key}` } });
  if (!res.ok) {
    input.setAttribute("aria-invalid", "true");
    err.textContent =
      res.status === 401 ? "That key is invalid or revoked." : `The service answered ${res.status}.`;
    input.focus();
    return;
  }
  resetData();
  state.key = key;
  sessionStorage.setItem(KEY_STORE, key);
  input.value = "";
  $("#forget-key").hidden = false;
  announce("Signed in");
  route();
}

// --- views and routing -----------------------------------------------------------

function showView(name, message) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
  document.body.dataset.view = name;
  if (name === "key") $("#key-error").textContent = message || "";
  const title = document.querySelector(`#view-${name} h1`);
  if (title) title.focus({ preventScroll: false });
  if (name !== "task") clearPlayer();
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}

async function route() {
  if (state.config?.auth_required && !state.key) return showView("key");
  const { path, params } = parseHash();
  const m = path.match(/^\/tasks\/([A-Za-z0-9]+)$/);
  try {
    if (m) return await openTask(m[1], params.get("t"));
    if (path === "/search") return await runSearch(params.get("q") || "");
    showView("tasks");
    document.title = "Tasks · aipp console";
    if (!state.order.length) await loadTasks(true);
  } catch (e) {
    if (e.status !== 401) announce(`Error: ${e.message}`);
  }
}

// --- the task list -------------------------------------------------------------

async function loadTasks(reset) {
  if (reset) {
    state.cursor = null;
    state.order = [];
    $("#task-list").replaceChildren();
  }
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (state.cursor) q.set("cursor", state.cursor);
  const page = await api(`/v1/tasks?${q}`);
  for (const t of page.data) {
    state.tasks.set(t.id, t);
    if (!state.order.includes(t.id)) {
      state.order.push(t.id);
      $("#task-list").append(renderRow(t));
    }
    if (!TERMINAL.has(t.status)) watch(t.id);
  }
  state.cursor = page.next_cursor;
  $("#more").hidden = !state.cursor;
  $("#tasks-empty").hidden = state.order.length > 0;
  document.body.dataset.tasksLoaded = "true";
}

function percent(t, progress) {
  if (t.status === "succeeded") return 100;
  if (t.status === "summarizing") return 90;
  if (t.status === "transcribing") {
    const p = progress || t._progress;
    if (p && p.total_s) return Math.round(5 + 80 * Math.min(1, p.transcribed_s / p.total_s));
    return 5;
  }
  return 0;
}

function stageText(t) {
  if (t.status === "failed") return `failed: ${t.error?.message || t.error?.code || "error"}`;
  if (TERMINAL.has(t.status)) return t.status;
  return `${t.status} · ${percent(t)}%`;
}

function duration(t) {
  const d = t.result?.transcript?.duration_s ?? t.audio?.duration_s;
  return d ? clock(d) : "–";
}

function renderRow(t) {
  const li = h("li", {
    class: "task",
    id: `task-${t.id}`,
    dataset: { taskId: t.id, status: t.status },
  });
  fillRow(li, t);
  return li;
}

function fillRow(li, t) {
  const name = taskName(t);
  const running = !TERMINAL.has(t.status);
  li.dataset.status = t.status;
  const parts = [
    h(
      "div",
      { class: "task-main" },
      h("a", { href: `#/tasks/${t.id}`, class: "task-name" }, name),
      h("span", { class: `badge s-${t.status}` }, t.status),
    ),
    h(
      "div",
      { class: "task-facts" },
      h("span", {}, "Duration ", h("b", {}, duration(t))),
      h("span", {}, "Created ", when(t.created_at)),
      t.cached ? h("span", { class: "muted" }, "from cache") : null,
    ),
    running
      ? h(
          "div",
          { class: "progress-line" },
          h("progress", {
            max: "100",
            value: String(percent(t)),
            "aria-label": `Progress of ${name}`,
          }),
          h("span", { class: "stage" }, stageText(t)),
        )
      : t.status === "failed"
        ? h("p", { class: "error" }, stageText(t))
        : null,
    h(
      "div",
      { class: "actions" },
      running
        ? h("button", {
            type: "button",
            text: "Cancel",
            "aria-label": `Cancel ${name}`,
            onclick: () => cancelTask(t.id),
          })
        : null,
      h("button", {
        type: "button",
        class: "danger",
        text: "Delete",
        "aria-label": `Delete ${name}`,
        onclick: () => removeTask(t.id),
      }),
    ),
  ];
  li.replaceChildren(...parts.filter(Boolean)); // replaceChildren would print "null"
}

function updateTask(t) {
  const old = state.tasks.get(t.id) || {};
  const merged = { ...old, ...t };
  state.tasks.set(t.id, merged);
  const li = document.getElementById(`task-${t.id}`);
  if (li) fillRow(li, merged);
  if (state.current?.id === t.id) renderTaskHeader(merged);
  return merged;
}

async function cancelTask(id) {
  const t = state.tasks.get(id) || { id };
  if (!confirm(`Stop processing “${taskName(t)}”? It stays in the list as cancelled.`)) return;
  try {
    updateTask(await api(`/v1/tasks/${id}/cancel`, { method: "POST" }));
    announce(`Cancelling ${taskName(t)}`);
  } catch (e) {
    if (e.status === 409) updateTask(await api(`/v1/tasks/${id}`));
    else announce(`Could not cancel: ${e.message}`);
  }
}

async function removeTask(id) {
  const t = state.tasks.get(id) || { id };
  const running = !TERMINAL.has(t.status) ? "It is still running: it is cancelled first. " : "";
  if (!confirm(`Delete “${taskName(t)}”? ${running}Its transcript, summary and audio are removed.`)) {
    return;
  }
  state.streams.get(id)?.abort();
  try {
    // A bounded wait: a DELETE that cannot get through must not leave the page stuck.
    await api(`/v1/tasks/${id}`, { method: "DELETE", signal: AbortSignal.timeout(20000) });
  } catch (e) {
    if (e.status !== 404) return announce(`Could not delete: ${e.message}`);
  }
  state.tasks.delete(id);
  state.order = state.order.filter((x) => x !== id);
  document.getElementById(`task-${id}`)?.remove();
  $("#tasks-empty").hidden = state.order.length > 0;
  announce(`Deleted ${taskName(t)}`);
  if (state.current?.id === id) location.hash = "#/";
}

// --- live updates (SSE over fetch, so the key travels in a header, not the URL) ----

async function watch(id) {
  if (state.streams.has(id) || state.streams.size >= MAX_STREAMS) return;
  const ctrl = new AbortController();
  state.streams.set(id, ctrl);
  let finished = false;
  try {
    const res = await fetch(`/v1/tasks/${id}/events`, {
      headers: authHeaders({ Accept: "text/event-stream" }),
      signal: ctrl.signal,
    });
    if (!res.ok) return;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        finished = (await onEvent(id, block)) || finished;
      }
    }
  } catch (e) {
    if (e.name === "AbortError") return;
  } finally {
    if (state.streams.get(id) === ctrl) state.streams.delete(id);
    nextWatch(id, finished);
  }
}

function nextWatch(id, finished) {
  // Another task may now get a stream; a stream that broke early is retried.
  for (const other of state.order) {
    const t = state.tasks.get(other);
    if (t && !TERMINAL.has(t.status) && other !== id) watch(other);
  }
  const t = state.tasks.get(id);
  if (!finished && t && !TERMINAL.has(t.status)) setTimeout(() => watch(id), 2000);
}

async function onEvent(id, block) {
  let event = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return false;
  const payload = JSON.parse(data);
  if (payload.deleted) {
    // Deleted elsewhere (another tab, the API): drop it here too.
    state.tasks.delete(id);
    state.order = state.order.filter((x) => x !== id);
    document.getElementById(`task-${id}`)?.remove();
    return true;
  }
  const old = state.tasks.get(id) || { id };
  const patch = { id, status: payload.status || old.status };
  if (payload.progress) patch._progress = payload.progress;
  if (payload.error) patch.error = payload.error;
  const t = updateTask(patch);
  // What arrived over the stream, for people debugging and for the browser test.
  const li = document.getElementById(`task-${id}`);
  if (li) {
    li.dataset.live = "sse";
    li.dataset.events = `${li.dataset.events || ""} ${event}:${t.status}`.trim();
  }
  document.body.dataset.lastEvent = `${id} ${event}:${t.status}`;
  if (TERMINAL.has(t.status)) {
    // The full view (duration, result) once it is done.
    try {
      const full = await api(`/v1/tasks/${id}`);
      updateTask(full);
      if (state.current?.id === id) renderResult(full);
    } catch {
      /* deleted meanwhile */
    }
    announce(`${taskName(t)}: ${t.status}`);
    return true;
  }
  return false;
}

// Tasks without a stream (more than MAX_STREAMS running) are refreshed now and then.
setInterval(async () => {
  if (document.hidden) return;
  for (const id of state.order) {
    const t = state.tasks.get(id);
    if (!t || TERMINAL.has(t.status) || state.streams.has(id)) continue;
    try {
      updateTask(await api(`/v1/tasks/${id}`));
    } catch {
      /* try later */
    }
  }
}, 5000);

// --- upload ----------------------------------------------------------------------

function selectedOptions() {
  const opts = {};
  const lang = $("#language").value.trim();
  const instr = $("#instruction").value.trim();
  if (lang) opts.language = lang;
  if (instr) opts.instruction = instr;
  if ($("#diarize").checked) opts.diarize = "true";
  return opts;
}

function uploadOne(file, opts) {
  // XHR, not fetch: only XHR reports upload progress.
  const item = h("li", { class: "upload-item" });
  const bar = h("progress", { max: "100", value: "0", "aria-label": `Upload of ${file.name}` });
  const note = h("span", { class: "stage" }, "uploading 0%");
  item.append(h("span", { class: "upload-name" }, file.name), bar, note);
  $("#uploads").append(item);
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("file", file, file.name);
    for (const [k, v] of Object.entries(opts)) form.append(k, v);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/tasks");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      const p = Math.round((100 * e.loaded) / e.total);
      bar.value = p;
      note.textContent = `uploading ${p}%`;
    };
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* empty */
      }
      if (xhr.status === 202) {
        bar.value = 100;
        note.textContent = "uploaded";
        item.dataset.taskId = body.id;
        setTimeout(() => item.remove(), 4000);
        resolve(body);
      } else {
        if (xhr.status === 401) forgetKey("Your API key was not accepted; enter a valid key.");
        note.textContent = `failed: ${body?.error?.message || xhr.status}`;
        item.classList.add("failed");
        resolve(null);
      }
    };
    xhr.onerror = () => {
      note.textContent = "failed: network error";
      item.classList.add("failed");
      resolve(null);
    };
    xhr.send(form);
  });
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

async function submitUpload(event) {
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
  $("#drop-hint").textContent = "Choose files, or drop them anywhere in this box.";
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

function setupDrop() {
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
      : "Choose files, or drop them anywhere in this box.";
  });
}

// --- the result page ---------------------------------------------------------------

function clearPlayer() {
  const player = $("#player");
  if (player) {
    player.pause();
    player.removeAttribute("src");
  }
  if (state.audioUrl) URL.revokeObjectURL(state.audioUrl);
  state.audioUrl = null;
  state.current = null;
  state.segments = [];
  delete document.body.dataset.audio;
}

async function openTask(id, t) {
  clearPlayer();
  state.current = { id }; // the page's buttons act on this task even before it has loaded
  delete document.body.dataset.result; // "ready" again only once this task is shown
  showView("task");
  const task = await api(`/v1/tasks/${id}`);
  updateTask(task);
  state.current = task;
  state.pendingSeek = t !== null && t !== undefined ? Number(t) : null;
  document.title = `${taskName(task)} · aipp console`;
  renderResult(task);
  loadAudio(task);
  if (!TERMINAL.has(task.status)) watch(id);
}

function renderTaskHeader(t) {
  $("#task-title").textContent = taskName(t);
  const lang = t.result?.transcript?.language;
  $("#task-meta").replaceChildren(
    h("span", { class: `badge s-${t.status}` }, t.status),
    ` · ${duration(t)}`,
    lang ? ` · ${lang}` : "",
    " · created ",
    when(t.created_at),
  );
  const running = !TERMINAL.has(t.status);
  const prog = $("#task-progress");
  prog.hidden = !running;
  if (running) {
    prog.replaceChildren(
      h("progress", { max: "100", value: String(percent(t)), "aria-label": "Progress" }),
      h("span", { class: "stage" }, stageText(t)),
    );
  }
  $("#task-error").textContent = t.status === "failed" ? stageText(t) : "";
  $("#cancel-task").hidden = !running;
  for (const b of document.querySelectorAll("[data-download], #copy-md")) {
    b.disabled = t.status !== "succeeded";
  }
}

function renderResult(t) {
  state.current = t;
  renderTaskHeader(t);
  const segs = t.result?.transcript?.segments || [];
  const list = $("#segments");
  state.segments = [];
  const speakers = new Set();
  list.replaceChildren(
    ...segs.map((s, i) => {
      if (s.speaker) speakers.add(s.speaker);
      const btn = h(
        "button",
        {
          type: "button",
          class: "seg",
          dataset: { start: s.start, end: s.end, segId: s.id ?? i },
          "aria-label": `Play from ${clock(s.start)}${s.speaker ? `, ${s.speaker}` : ""}: ${s.text.trim()}`,
          onclick: () => seek(s.start, true),
        },
        h("span", { class: "t" }, clock(s.start)),
        s.speaker ? h("span", { class: "speaker" }, s.speaker) : null,
        h("span", { class: "text" }, s.text.trim()),
      );
      state.segments.push({ id: s.id ?? i, start: s.start, end: s.end, el: btn });
      return h("li", {}, btn);
    }),
  );
  const spk = $("#speakers");
  spk.hidden = speakers.size === 0;
  spk.replaceChildren(...[...speakers].map((s) => h("li", { class: "speaker" }, s)));
  renderSummary(t.result?.summary);
  document.body.dataset.result = t.status === "succeeded" ? "ready" : t.status;
}

function evidenceButton(ev, label) {
  if (!ev || ev.start === null || ev.start === undefined) return null;
  return h("button", {
    type: "button",
    class: "evidence",
    text: `▶ ${clock(ev.start)}`,
    title: ev.quote ? `“${ev.quote}”` : null,
    "aria-label": `Play the evidence for “${label}” at ${clock(ev.start)}`,
    onclick: () => seek(ev.start, true, ev.segments),
  });
}

function itemList(el, items, evidence) {
  el.replaceChildren(
    ...(items || []).map((text, i) => h("li", {}, text, " ", evidenceButton(evidence?.[i], text))),
  );
  if (!items?.length) el.append(h("li", { class: "muted" }, "None"));
}

function renderSummary(s) {
  $("#summary").hidden = !s;
  if (!s) return;
  $("#summary-text").textContent = s.summary || "";
  itemList($("#key-points"), s.key_points, s.key_points_evidence);
  itemList($("#action-items"), s.action_items, s.action_items_evidence);
  const chapters = s.chapters || [];
  $("#chapters-box").hidden = !chapters.length;
  $("#chapters").replaceChildren(
    ...chapters.map((c) =>
      h(
        "li",
        {},
        h("button", {
          type: "button",
          class: "evidence",
          text: clock(c.start),
          "aria-label": `Play chapter “${c.title}” from ${clock(c.start)}`,
          onclick: () => seek(c.start, true),
        }),
        " ",
        h("b", {}, c.title),
        c.gist ? ` — ${c.gist}` : "",
      ),
    ),
  );
}

async function loadAudio(t) {
  const player = $("#player");
  if (!t.audio?.sha256 && !t.audio?.filename) return;
  try {
    // Fetched with the key, then played from memory: an <audio src> cannot send a header.
    const res = await api(`/v1/tasks/${t.id}/audio`, { raw: true });
    const blob = await res.blob();
    if (state.current?.id !== t.id) return;
    state.audioUrl = URL.createObjectURL(blob);
    player.src = state.audioUrl;
  } catch (e) {
    if (e.status !== 401) announce(`The audio is not available: ${e.message}`);
  }
}

function seek(seconds, play, segIds) {
  const player = $("#player");
  if (player.readyState < 1) {
    state.pendingSeek = seconds;
  } else {
    player.currentTime = seconds;
    if (play) player.play().catch(() => {});
  }
  highlight(seconds, segIds);
}

function highlight(time, segIds) {
  let active = null;
  if (segIds?.length) active = state.segments.find((s) => s.id === segIds[0]);
  active ??= state.segments.find((s) => time >= s.start - 0.05 && time < s.end);
  for (const s of state.segments) {
    if (s === active) s.el.setAttribute("aria-current", "true");
    else s.el.removeAttribute("aria-current");
  }
  return active;
}

function setupPlayer() {
  const player = $("#player");
  player.addEventListener("loadedmetadata", () => {
    document.body.dataset.audio = "ready";
    if (state.pendingSeek !== null && !Number.isNaN(state.pendingSeek)) {
      player.currentTime = state.pendingSeek;
      const seg = highlight(state.pendingSeek);
      seg?.el.scrollIntoView({ block: "center" });
      state.pendingSeek = null;
    }
  });
  player.addEventListener("timeupdate", () => highlight(player.currentTime));
  player.addEventListener("seeked", () => highlight(player.currentTime));
}

async function download(fmt) {
  const t = state.current;
  if (!t) return;
  try {
    const res = await api(`/v1/tasks/${t.id}/transcript?format=${fmt}`, { raw: true });
    const blob = await res.blob();
    const stem = (t.audio?.filename || t.id).replace(/\.[^.]+$/, "");
    const a = h("a", { href: URL.createObjectURL(blob), download: `${stem}.${fmt}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) {
    announce(`Download failed: ${e.message}`);
  }
}

function markdown(t) {
  const s = t.result?.summary || {};
  const tr = t.result?.transcript || {};
  const lines = [`# ${taskName(t)}`, ""];
  if (s.summary) lines.push("## Summary", "", s.summary, "");
  if (s.key_points?.length) lines.push("## Key points", "", ...s.key_points.map((k) => `- ${k}`), "");
  if (s.action_items?.length) {
    lines.push("## Action items", "", ...s.action_items.map((k) => `- [ ] ${k}`), "");
  }
  if (s.chapters?.length) {
    lines.push("## Chapters", "", ...s.chapters.map((c) => `- [${clock(c.start)}] ${c.title}`), "");
  }
  lines.push("## Transcript", "");
  for (const seg of tr.segments || []) {
    const who = seg.speaker ? ` **${seg.speaker}:**` : "";
    lines.push(`[${clock(seg.start)}]${who} ${seg.text.trim()}  `);
  }
  return lines.join("\n") + "\n";
}

async function copyMarkdown() {
  const t = state.current;
  if (!t) return;
  const md = markdown(t);
  try {
    await navigator.clipboard.writeText(md);
    $("#md-fallback").hidden = true;
    announce("Copied the result as Markdown");
  } catch {
    // No clipboard (plain http on a remote host): show the text to copy by hand.
    const box = $("#md-fallback");
    box.hidden = false;
    const ta = $("#md-text");
    ta.value = md;
    ta.focus();
    ta.select();
  }
}

// --- search ------------------------------------------------------------------------

function marked(text, terms) {
  if (!terms?.length) return [text];
  const esc = terms.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  // The last word is searched as a prefix: mark the whole word it starts.
  esc[esc.length - 1] += "[\\p{L}\\p{N}_]*";
  const re = new RegExp(`(${esc.join("|")})`, "giu");
  return text.split(re).map((part, i) => (i % 2 ? h("mark", {}, part) : part));
}

async function runSearch(q) {
  showView("search");
  $("#search-q").value = q;
  document.title = `Search: ${q} · aipp console`;
  const out = $("#search-results");
  out.replaceChildren();
  if (!q.trim()) {
    $("#search-summary").textContent = "Type some words to search your transcripts.";
    return;
  }
  let page;
  try {
    page = await api(`/v1/search?${new URLSearchParams({ q, limit: "50" })}`);
  } catch (e) {
    $("#search-summary").textContent = e.status === 401 ? "" : e.message;
    return;
  }
  const n = page.data.length;
  $("#search-summary").textContent = n
    ? `${n} matching passage${n > 1 ? "s" : ""} for “${q}”.`
    : `Nothing found for “${q}”.`;
  const groups = new Map();
  for (const hit of page.data) {
    if (!groups.has(hit.task_id)) groups.set(hit.task_id, []);
    groups.get(hit.task_id).push(hit);
  }
  for (const [taskId, hits] of groups) {
    out.append(
      h(
        "section",
        { class: "card hit-group", dataset: { taskId } },
        h("h2", {}, h("a", { href: `#/tasks/${taskId}` }, hits[0].filename || taskId)),
        h(
          "ul",
          { class: "hits" },
          hits.map((hit) =>
            h(
              "li",
              {},
              h(
                "a",
                { class: "hit", href: `#/tasks/${taskId}?t=${hit.start}` },
                h("span", { class: "t" }, clock(hit.start)),
                " ",
                ...marked(hit.text, page.terms),
              ),
            ),
          ),
        ),
      ),
    );
  }
  document.body.dataset.searched = q;
  announce($("#search-summary").textContent);
}

// --- start -----------------------------------------------------------------------------

async function start() {
  state.config = await (await fetch("/console/config.json")).json();
  $("#version").textContent = `aipp ${state.config.version}`;
  const dash = $("#dashboard-link");
  dash.href = `${location.protocol}//${location.hostname}:${state.config.dashboard_port}/`;
  $("#forget-key").hidden = !state.key;
  $("#forget-key").addEventListener("click", () => {
    forgetKey();
    announce("Forgot the key");
    route();
  });
  $("#key-form").addEventListener("submit", submitKey);
  $("#upload-form").addEventListener("submit", submitUpload);
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("#search-q").value.trim();
    const target = `#/search?${new URLSearchParams({ q })}`;
    if (location.hash === target) route();
    else location.hash = target;
  });
  $("#refresh").addEventListener("click", () => loadTasks(true));
  $("#more").addEventListener("click", () => loadTasks(false));
  for (const b of document.querySelectorAll("[data-download]")) {
    b.addEventListener("click", () => download(b.dataset.download));
  }
  $("#copy-md").addEventListener("click", copyMarkdown);
  $("#delete-task").addEventListener("click", () => state.current && removeTask(state.current.id));
  $("#cancel-task").addEventListener("click", () => state.current && cancelTask(state.current.id));
  setupDrop();
  setupPlayer();
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "true";
}

start();
