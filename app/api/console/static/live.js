// Live updates: one event stream per running task (at most MAX_STREAMS at a time),
// and a slow poll for the running tasks that got no stream.

import { api, taskEvents } from "./api.js";
import { announce } from "./dom.js";
import { renderResult } from "./result.js";
import { state, taskName, TERMINAL } from "./state.js";
import { dropTask, updateTask } from "./tasks.js";

const MAX_STREAMS = 3; // browsers allow 6 connections per host; leave room for uploads

export async function watch(id) {
  if (state.streams.has(id) || state.streams.size >= MAX_STREAMS) return;
  const ctrl = new AbortController();
  state.streams.set(id, ctrl);
  let finished = false;
  try {
    for await (const { event, data } of taskEvents(id, ctrl.signal)) {
      finished = (await onEvent(id, event, data)) || finished;
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

// Applies one event; true once the task is done (or gone) and its stream may end.
async function onEvent(id, event, data) {
  if (!data) return false;
  const payload = JSON.parse(data);
  if (payload.deleted) {
    // Deleted elsewhere (another tab, the API): drop it here too.
    dropTask(id);
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
