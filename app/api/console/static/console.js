// The aipp web console's entry point: plain ES modules, no build step, no third-party
// code. Everything goes through the public API with the caller's key (api.js); the
// DOM is built with textContent only (dom.js), so transcript text cannot inject markup.
// This module wires the page's controls to the views and starts the router.

import { hasKey, onUnauthorized } from "./api.js";
import { forgetKey, submitKey } from "./auth.js";
import { $, announce } from "./dom.js";
import { setupPlayer } from "./player.js";
import { setupRecord } from "./record.js";
import { copyMarkdown, download } from "./result.js";
import { loadTasks, route } from "./router.js";
import { state } from "./state.js";
import { cancelTask, removeTask } from "./tasks.js";
import { setupDrop, submitUpload } from "./upload.js";

onUnauthorized(() => forgetKey("Your API key was not accepted; enter a valid key."));

async function start() {
  state.config = await (await fetch("/console/config.json")).json();
  $("#version").textContent = `aipp ${state.config.version}`;
  const dash = $("#dashboard-link");
  dash.href = `${location.protocol}//${location.hostname}:${state.config.dashboard_port}/`;
  $("#forget-key").hidden = !hasKey();
  $("#forget-key").addEventListener("click", () => {
    forgetKey();
    announce("Forgot the key");
    route();
  });
  $("#key-form").addEventListener("submit", async (event) => {
    if (await submitKey(event)) route();
  });
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
  setupRecord();
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "true";
}

start();
