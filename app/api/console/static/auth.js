// The API key: asking for it, trying it before keeping it, and forgetting it along
// with everything that was loaded under it.

import { dropKey, rememberKey, tryKey } from "./api.js";
import { $, announce } from "./dom.js";
import { clearPlayer } from "./player.js";
import { state } from "./state.js";
import { showView } from "./view.js";

export function forgetKey(message = "") {
  dropKey();
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

// The key form's submit handler; true once a working key is kept.
export async function submitKey(event) {
  event.preventDefault();
  const input = $("#api-key");
  const key = input.value.trim();
  const err = $("#key-error");
  err.textContent = "";
  input.removeAttribute("aria-invalid");
  const res = await tryKey(key);
  if (!res.ok) {
    input.setAttribute("aria-invalid", "true");
    err.textContent =
      res.status === 401 ? "That key is invalid or revoked." : `The service answered ${res.status}.`;
    input.focus();
    return false;
  }
  resetData();
  rememberKey(key);
  input.value = "";
  $("#forget-key").hidden = false;
  announce("Signed in");
  return true;
}
