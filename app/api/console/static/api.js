// The client of the public API: the caller's key, JSON requests, uploads with
// progress, and a task's live events. Knows nothing of the page; a rejected key is
// reported to whoever called onUnauthorized.

const KEY_STORE = "aipp.apiKey"; // sessionStorage: gone when the tab closes

let key = sessionStorage.getItem(KEY_STORE);
let unauthorized = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function hasKey() {
  return Boolean(key);
}

export function rememberKey(newKey) {
  key = newKey;
  sessionStorage.setItem(KEY_STORE, newKey);
}

export function dropKey() {
  key = null;
  sessionStorage.removeItem(KEY_STORE);
}

// Called, before the request fails, when the service rejects the key.
export function onUnauthorized(fn) {
  unauthorized = fn;
}

// A key the caller typed, tried before it is kept.
export function tryKey(candidate) {
  return fetch("/v1/tasks?limit=1", { headers: { Authorization: `Bearer ${candidate}` } });
}

function authHeaders(extra = {}) {
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

export async function api(path, { method = "GET", body, headers = {}, raw = false, signal } = {}) {
  const res = await fetch(path, { method, body, headers: authHeaders(headers), signal });
  if (res.status === 401) {
    unauthorized();
    throw new ApiError(401, "unauthorized", "API key required");
  }
  if (!res.ok) {
    let code = "http_" + res.status;
    let message = res.statusText || "request failed";
    try {
      const err = (await res.json()).error;
      code = err.code || code;
      message = err.message || message;
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, code, message);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

// XHR, not fetch: only XHR reports upload progress. Resolves to {status, body}
// (body: the parsed JSON, or null), or to null when the network failed.
export function uploadTask(form, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/tasks");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(Math.round((100 * e.loaded) / e.total));
    };
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* empty */
      }
      if (xhr.status === 401) unauthorized();
      resolve({ status: xhr.status, body });
    };
    xhr.onerror = () => resolve(null);
    xhr.send(form);
  });
}

// A task's server-sent events, read over fetch so the key travels in a header, not
// the URL. Yields {event, data} per block; ends quietly if the service refuses.
export async function* taskEvents(id, signal) {
  const res = await fetch(`/v1/tasks/${id}/events`, {
    headers: authHeaders({ Accept: "text/event-stream" }),
    signal,
  });
  if (!res.ok) return;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n/g, "\n");
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      yield parseEvent(block);
    }
  }
}

function parseEvent(block) {
  let event = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  return { event, data };
}
