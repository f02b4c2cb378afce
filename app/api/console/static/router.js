// Which page the URL hash shows (#/, #/tasks/<id>?t=<seconds>, #/search?q=<words>),
// and loading the task list or a task's result into it.

import { api, hasKey } from "./api.js";
import { $, announce } from "./dom.js";
import { watch } from "./live.js";
import { clearPlayer, loadAudio } from "./player.js";
import { renderResult } from "./result.js";
import { runSearch } from "./search.js";
import { state, taskName, TERMINAL } from "./state.js";
import { renderRow, updateTask } from "./tasks.js";
import { showView } from "./view.js";

const PAGE = 20;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}

export async function route() {
  if (state.config?.auth_required && !hasKey()) return showView("key");
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

export async function loadTasks(reset) {
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
