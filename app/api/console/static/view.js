// Which of the page's views is shown; leaving the result page stops its audio.

import { $ } from "./dom.js";
import { clearPlayer } from "./player.js";

export function showView(name, message) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
  document.body.dataset.view = name;
  if (name === "key") $("#key-error").textContent = message || "";
  const title = document.querySelector(`#view-${name} h1`);
  if (title) title.focus({ preventScroll: false });
  if (name !== "task") clearPlayer();
}
