// The search page: passages of the caller's transcripts, grouped by task, with the
// searched words marked; each opens the result at that moment of the audio.

import { api } from "./api.js";
import { $, announce, clock, h } from "./dom.js";
import { showView } from "./view.js";

function marked(text, terms) {
  if (!terms?.length) return [text];
  const esc = terms.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  // The last word is searched as a prefix: mark the whole word it starts.
  esc[esc.length - 1] += "[\\p{L}\\p{N}_]*";
  const re = new RegExp(`(${esc.join("|")})`, "giu");
  return text.split(re).map((part, i) => (i % 2 ? h("mark", {}, part) : part));
}

export async function runSearch(q) {
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
