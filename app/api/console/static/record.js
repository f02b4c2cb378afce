// "Record": the microphone, live captions, and the task the recording becomes.
// Speaks the OpenAI Realtime transcription protocol to /v1/realtime (the API key goes
// as the `openai-insecure-api-key.<key>` subprotocol, as browsers must): 24 kHz PCM16
// appends; committed words (deltas, never changed) are shown apart from the tail the
// server may still change (aipp.transcription.tail). Stop sends session.finish and
// opens the task the session became.

import { $, announce, h } from "./dom.js";

const KEY_STORE = "aipp.apiKey"; // api.js keeps the key here (sessionStorage)
const RATE = 24000;

let rec = null; // {ws, ctx, stream, node, items: Map<item_id, {line, done, tail}>}

function b64(int16) {
  const bytes = new Uint8Array(int16.buffer);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

function pcm16(float32) {
  const out = new Int16Array(float32.length);
  for (let i = 0; i < float32.length; i++) {
    const s = Math.max(-1, Math.min(1, float32[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

function status(text) {
  $("#record-status").textContent = text;
}

function line(id) {
  let item = rec.items.get(id);
  if (!item) {
    const done = h("span", { class: "committed" });
    const tail = h("span", { class: "tail" });
    const el = h("li", { dataset: { item: id } }, done, " ", tail);
    $("#captions").append(el);
    item = { el, done, tail };
    rec.items.set(id, item);
  }
  return item;
}

function onEvent(ev) {
  switch (ev.type) {
    case "conversation.item.input_audio_transcription.delta":
      line(ev.item_id).done.textContent += ev.delta;
      break;
    case "aipp.transcription.tail":
      line(ev.item_id).tail.textContent = ev.text;
      break;
    case "conversation.item.input_audio_transcription.completed": {
      const item = line(ev.item_id);
      item.done.textContent = ev.transcript;
      item.tail.textContent = "";
      item.el.dataset.completed = "true";
      break;
    }
    case "error":
      status(`Error: ${ev.error.message}`);
      break;
    case "session.finished":
      finished(ev);
      break;
  }
}

function finished(ev) {
  const id = ev.task_id;
  status(id ? "Saved as a task." : `Not saved: ${ev.error || "no audio"}`);
  cleanup();
  if (id) location.hash = `#/tasks/${id}`;
}

function cleanup() {
  if (!rec) return;
  rec.node?.disconnect();
  rec.stream?.getTracks().forEach((t) => t.stop());
  rec.ctx?.close();
  rec = null;
  $("#record").textContent = "Record";
  $("#record").setAttribute("aria-pressed", "false");
}

async function start() {
  $("#captions").replaceChildren();
  const key = sessionStorage.getItem(KEY_STORE);
  const protocols = ["realtime", ...(key ? [`openai-insecure-api-key.${key}`] : [])];
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (e) {
    status(`No microphone: ${e.message}`);
    return;
  }
  const ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?intent=transcription`, protocols);
  const ctx = new AudioContext({ sampleRate: RATE });
  rec = { ws, ctx, stream, node: null, items: new Map() };
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = () => {
    if (rec && rec.ws === ws) {
      status("The connection closed.");
      cleanup();
    }
  };
  ws.onopen = () => {
    const source = ctx.createMediaStreamSource(stream);
    // ScriptProcessor: no extra module to load; 4096 frames ≈ 170 ms per append.
    const node = ctx.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (e) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      const audio = b64(pcm16(e.inputBuffer.getChannelData(0)));
      ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio }));
    };
    source.connect(node);
    node.connect(ctx.destination);
    rec.node = node;
    status("Recording… speak; captions appear as words settle.");
    announce("Recording");
  };
  $("#record").textContent = "Stop";
  $("#record").setAttribute("aria-pressed", "true");
}

function stop() {
  if (!rec) return;
  status("Finishing the last words…");
  rec.node?.disconnect();
  rec.stream.getTracks().forEach((t) => t.stop());
  if (rec.ws.readyState === WebSocket.OPEN) {
    rec.ws.send(JSON.stringify({ type: "session.finish" }));
  } else {
    cleanup();
  }
}

export function setupRecord() {
  $("#record").addEventListener("click", () => (rec ? stop() : start()));
}
