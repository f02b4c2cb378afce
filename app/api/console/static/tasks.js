// The rows of the task list, kept in step with the tasks they show, and the two
// actions on a task (cancel, delete), which the result page offers too.

import { api } from "./api.js";
import { $, announce, h, when } from "./dom.js";
import { renderTaskHeader } from "./result.js";
import { duration, percent, stageText, state, taskName, TERMINAL } from "./state.js";

export function renderRow(t) {
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

// Merges what is new about a task into what is known, and redraws where it is shown.
export function updateTask(t) {
  const old = state.tasks.get(t.id) || {};
  const merged = { ...old, ...t };
  state.tasks.set(t.id, merged);
  const li = document.getElementById(`task-${t.id}`);
  if (li) fillRow(li, merged);
  if (state.current?.id === t.id) renderTaskHeader(merged);
  return merged;
}

// Forgets a deleted task and takes its row off the list.
export function dropTask(id) {
  state.tasks.delete(id);
  state.order = state.order.filter((x) => x !== id);
  document.getElementById(`task-${id}`)?.remove();
}

export async function cancelTask(id) {
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

export async function removeTask(id) {
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
  dropTask(id);
  $("#tasks-empty").hidden = state.order.length > 0;
  announce(`Deleted ${taskName(t)}`);
  if (state.current?.id === id) location.hash = "#/";
}
