// The page's shared state, and the words and numbers every view derives from a task.

import { clock } from "./dom.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export const state = {
  config: null,
  tasks: new Map(), // id -> task view (as the API returns it)
  order: [], // ids, newest first
  cursor: null,
  streams: new Map(), // id -> AbortController
  current: null, // the task on the result page
  audioUrl: null,
  pendingSeek: null,
  segments: [], // [{start, end, el, id}]
};

export function taskName(t) {
  return t.audio?.filename || t.audio?.url || t.id;
}

export function percent(t, progress) {
  if (t.status === "succeeded") return 100;
  if (t.status === "summarizing") return 90;
  if (t.status === "transcribing") {
    const p = progress || t._progress;
    if (p && p.total_s) return Math.round(5 + 80 * Math.min(1, p.transcribed_s / p.total_s));
    return 5;
  }
  return 0;
}

export function stageText(t) {
  if (t.status === "failed") return `failed: ${t.error?.message || t.error?.code || "error"}`;
  if (TERMINAL.has(t.status)) return t.status;
  return `${t.status} · ${percent(t)}%`;
}

export function duration(t) {
  const d = t.result?.transcript?.duration_s ?? t.audio?.duration_s;
  return d ? clock(d) : "–";
}
