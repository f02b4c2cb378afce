// The audio player of the result page, and the transcript segment it is playing.

import { $, announce } from "./dom.js";
import { api } from "./api.js";
import { state } from "./state.js";

export function clearPlayer() {
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

// An uploaded transcript has no audio to play; its segments still show their times.
// Part of rendering a task: the live view can render a task before openTask's own
// fetch returns, and the page must not say "ready" with the last task's player shown.
export function showPlayerFor(t) {
  const player = $("#player");
  player.hidden = t.options?.input === "transcript";
  return player;
}

export async function loadAudio(t) {
  const player = showPlayerFor(t);
  if (player.hidden) return;
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

export function seek(seconds, play, segIds) {
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

export function setupPlayer() {
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
