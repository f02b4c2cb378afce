// The result page's content: header, transcript, summary, and its two exports
// (a transcript file to download, the whole result as Markdown to copy).

import { api } from "./api.js";
import { $, announce, clock, h, when } from "./dom.js";
import { seek, showPlayerFor } from "./player.js";
import { duration, percent, stageText, state, taskName, TERMINAL } from "./state.js";

export function renderTaskHeader(t) {
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

// Speaker id -> the name to show: a rename (or a transcript's own name), else "Speaker N".
function speakerNames(transcript) {
  const names = new Map();
  for (const s of transcript?.speakers || []) {
    names.set(s.id, s.name || s.id.replace(/^speaker_(\d+)$/, "Speaker $1"));
  }
  return (id) => names.get(id) || id;
}

export function renderResult(t) {
  state.current = t;
  renderTaskHeader(t);
  const segs = t.result?.transcript?.segments || [];
  const nameOf = speakerNames(t.result?.transcript);
  const list = $("#segments");
  state.segments = [];
  const speakers = new Set();
  list.replaceChildren(
    ...segs.map((s, i) => {
      const who = s.speaker ? nameOf(s.speaker) : null;
      if (who) speakers.add(who);
      const btn = h(
        "button",
        {
          type: "button",
          class: "seg",
          dataset: { start: s.start, end: s.end, segId: s.id ?? i },
          "aria-label": `Play from ${clock(s.start)}${who ? `, ${who}` : ""}: ${s.text.trim()}`,
          onclick: () => seek(s.start, true),
        },
        h("span", { class: "t" }, clock(s.start)),
        who ? h("span", { class: "speaker" }, who) : null,
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
  showPlayerFor(t);
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
  $("#summary").hidden = !s || s.method === "skipped"; // asked for the transcript only
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

export async function download(fmt) {
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
  const nameOf = speakerNames(tr);
  for (const seg of tr.segments || []) {
    const who = seg.speaker ? ` **${nameOf(seg.speaker)}:**` : "";
    lines.push(`[${clock(seg.start)}]${who} ${seg.text.trim()}  `);
  }
  return lines.join("\n") + "\n";
}

export async function copyMarkdown() {
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
