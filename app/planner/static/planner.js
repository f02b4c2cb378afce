// Capacity planner page: form -> POST /v1/plan -> results and an inline SVG chart.
// No libraries, no network beyond this server.
(function () {
  "use strict";

  var form = document.getElementById("plan-form");
  var SVG_NS = "http://www.w3.org/2000/svg";
  var presets = {};
  var seq = 0;       // requests sent
  var shown = 0;     // newest request whose answer is on screen
  var timer = null;

  // With API keys on, the planner's API wants the key the console keeps for this tab
  // (same origin); without one, a 401 says where to enter it.
  function headers(extra) {
    var out = Object.assign({ "Accept": "application/json" }, extra || {});
    var key = null;
    try { key = window.sessionStorage.getItem("aipp.apiKey"); } catch (e) { key = null; }
    if (key) out["Authorization"] = "Bearer " + key;
    return out;
  }

  function keyHint(resp) {
    return resp.status === 401
      ? "This server needs an API key: enter it in the console (/console), then reload."
      : "HTTP " + resp.status;
  }

  function $(id) { return document.getElementById(id); }
  function money(x) {
    if (x === null || x === undefined) return "–";
    var digits = Math.abs(x) < 10 ? 2 : 0;
    return "$" + Number(x).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function num(x, d) {
    return Number(x).toLocaleString("en-US", { maximumFractionDigits: d === undefined ? 2 : d });
  }
  function setText(id, text) { $(id).textContent = text; }

  function fields() { return form.querySelectorAll("[name]"); }

  function fillForm(values) {
    fields().forEach(function (el) {
      if (!(el.name in values)) return;
      var v = values[el.name];
      if (el.type === "checkbox") el.checked = !!v;
      else el.value = (v === null || v === undefined) ? "" : String(v);
    });
  }

  function readForm() {
    var body = {};
    fields().forEach(function (el) {
      var kind = el.dataset.kind;
      if (kind === "bool") { body[el.name] = el.checked; return; }
      var raw = el.value.trim();
      if (kind === "str") { body[el.name] = raw; return; }
      if (raw === "") {
        // a number input holding text the browser cannot parse also reads as ""
        if (el.validity && el.validity.badInput) body[el.name] = "not a number";
        else if (!el.dataset.optional) body[el.name] = null;
        return;
      }
      body[el.name] = Number(raw);
    });
    Object.keys(body).forEach(function (k) { if (body[k] === null) delete body[k]; });
    return body;
  }

  function clearErrors() {
    form.querySelectorAll(".field-error").forEach(function (e) { e.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (e) { e.removeAttribute("aria-invalid"); });
    setText("form-error", "");
  }

  function showError(err) {
    var field = err && err.field ? String(err.field).split(".")[0] : null;
    var slot = field ? $("err-" + field) : null;
    var message = err && err.message ? err.message : "request failed";
    if (slot) {
      // keep only the part of a multi-error message about this field
      var mine = message.split("; ").filter(function (m) { return m.indexOf(field + ":") === 0; });
      slot.textContent = (mine.length ? mine.join("; ") : message);
      var input = $(field);
      if (input) input.setAttribute("aria-invalid", "true");
    } else {
      setText("form-error", message);
    }
  }

  function schedule() {
    if (timer) clearTimeout(timer);
    timer = setTimeout(submit, 250);
  }

  function submit() {
    timer = null;
    var mySeq = ++seq;
    document.body.dataset.state = "loading";
    fetch("/v1/plan", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(readForm()),
    }).then(function (resp) {
      if (resp.status === 401) {
        return { ok: false, data: { error: { message: keyHint(resp) } } };
      }
      return resp.json().then(function (data) { return { ok: resp.ok, data: data }; },
        function () { return { ok: false, data: { error: { message: "HTTP " + resp.status } } }; });
    }).then(function (r) {
      if (mySeq < shown) return; // a newer answer is already on screen
      shown = mySeq;
      clearErrors();
      if (r.ok) {
        render(r.data);
        document.body.dataset.state = "ok";
      } else {
        showError(r.data && r.data.error);
        document.body.dataset.state = "error";
      }
      document.body.dataset.planSeq = String(mySeq);
    }).catch(function (e) {
      shown = mySeq;
      setText("form-error", "Cannot reach the planner API: " + e);
      document.body.dataset.state = "error";
      document.body.dataset.planSeq = String(mySeq);
    });
  }

  function itemsTable(id, breakdown) {
    var t = $(id);
    t.innerHTML = "";
    var head = t.insertRow();
    ["Item", "Quantity", "Unit price", "Monthly"].forEach(function (h, i) {
      var th = document.createElement("th");
      th.textContent = h;
      if (i) th.className = "num";
      head.appendChild(th);
    });
    breakdown.line_items.forEach(function (it) {
      var row = t.insertRow();
      var c = row.insertCell(); c.textContent = it.name; if (it.source) c.title = "source: " + it.source;
      c = row.insertCell(); c.className = "num"; c.textContent = num(it.quantity) + " " + it.unit;
      c = row.insertCell(); c.className = "num"; c.textContent = "$" + Number(it.unit_usd).toPrecision(4).replace(/\.?0+$/, "");
      c = row.insertCell(); c.className = "num"; c.textContent = money(it.monthly_usd);
    });
    var total = t.insertRow();
    total.className = "total";
    total.insertCell().textContent = "Total";
    total.insertCell();
    var per = total.insertCell(); per.className = "num"; per.textContent = money(breakdown.per_task_usd) + "/task";
    var m = total.insertCell(); m.className = "num"; m.textContent = money(breakdown.monthly_usd);
  }

  function adviceText(a) {
    var lines = ["deployments:"];
    Object.keys(a.deployments).forEach(function (k) {
      var r = a.deployments[k];
      lines.push("  " + k + ": {min_replicas: " + r.min_replicas + ", max_replicas: " + r.max_replicas + "}");
    });
    lines.push("worker_groups:");
    Object.keys(a.worker_groups).forEach(function (k) {
      var r = a.worker_groups[k];
      lines.push("  " + k + ": {min_replicas: " + r.min_replicas + ", max_replicas: " + r.max_replicas + "}");
    });
    lines.push("gpu_type: " + a.gpu_type);
    return lines.join("\n");
  }

  function secs(x) {
    if (x === null || x === undefined) return "unstable";
    return x < 90 ? num(x, 0) + " s" : num(x / 60, 1) + " min";
  }

  function poolsTable(s) {
    var t = $("pools");
    t.innerHTML = "";
    var head = t.insertRow();
    ["Pool", "Device", "GPUs/nodes", "Utilisation", "p50 wait", "p95 wait"].forEach(function (h, i) {
      var th = document.createElement("th"); th.textContent = h; if (i > 1) th.className = "num"; head.appendChild(th);
    });
    s.pools.forEach(function (pl) {
      var row = t.insertRow();
      row.dataset.pool = pl.pool;
      row.insertCell().textContent = pl.pool + (pl.basis === "estimate" ? " (estimate)" : "");
      row.insertCell().textContent = pl.device;
      var c = row.insertCell(); c.className = "num"; c.textContent = String(pl.gpus);
      c = row.insertCell(); c.className = "num"; c.textContent = num(pl.utilization * 100, 0) + "%";
      c = row.insertCell(); c.className = "num"; c.dataset.testid = "wait-p50"; c.textContent = secs(pl.wait_p50_s);
      c = row.insertCell(); c.className = "num"; c.dataset.testid = "wait-p95"; c.textContent = secs(pl.wait_p95_s);
    });
  }

  function rangesText(ranges, limit) {
    limit = limit || 4;
    var parts = ranges.slice(0, limit).map(function (r) {
      if (r.to_tasks === null) return num(r.from_tasks, 0) + "+";
      return r.from_tasks === r.to_tasks ? num(r.from_tasks, 0) : num(r.from_tasks, 0) + "–" + num(r.to_tasks, 0);
    });
    if (ranges.length > limit) parts.push("+" + (ranges.length - limit) + " more");
    return parts.join(", ") || "none";
  }

  function vol(x) { return x === null || x === undefined ? "never" : num(x, 0); }

  function baselinesTable(id, p, rows) {
    var t = $(id);
    t.innerHTML = "";
    var head = t.insertRow();
    ["Baseline", "Monthly", "Cheaper", "Stays cheaper from", "Self-hosting cheaper in", "Band"].forEach(function (h, i) {
      var th = document.createElement("th"); th.textContent = h; if (i && i !== 4) th.className = "num"; head.appendChild(th);
    });
    rows.forEach(function (b) {
      var row = t.insertRow();
      row.dataset.baseline = b.id;
      row.insertCell().textContent = b.name + (b.id === p.cheapest_managed ? " (cheapest)" : "");
      var c = row.insertCell(); c.className = "num"; c.textContent = money(b.monthly_usd);
      c = row.insertCell(); c.className = "num"; c.textContent = b.cheaper === "managed" ? "managed" : "self-hosted";
      c = row.insertCell(); c.className = "num";
      c.textContent = b.crossover.tasks_per_month ? num(b.crossover.tasks_per_month, 0) : b.crossover.status;
      c = row.insertCell(); c.dataset.testid = "ranges";
      c.textContent = rangesText(b.crossover.ranges) + (b.crossover.undecided.length ? " (some undecided)" : "");
      c = row.insertCell(); c.className = "num"; c.textContent = vol(b.band_low) + " to " + vol(b.band_high);
    });
  }

  function render(p) {
    var s = p.sizing;
    var w = $("warnings");
    w.innerHTML = "";
    p.warnings.forEach(function (m) { var li = document.createElement("li"); li.textContent = m; w.appendChild(li); });
    setText("out-latency", (s.method === "queueing"
      ? "Target p95 " + num(p.inputs.p95_minutes, 1) + " min; predicted p95 "
      : "Throughput sizing at " + num(p.inputs.target_utilization, 2) + " utilisation; predicted p95 ")
      + secs(s.predicted_p95_s) + (s.meets_target ? " (meets the target)" : " (misses the target)") + ".");
    poolsTable(s);
    baselinesTable("baselines", p, p.baselines.filter(function (x) { return x.comparable; }));
    var waits = p.baselines.filter(function (x) { return !x.comparable; });
    baselinesTable("baselines-wait", p, waits);
    $("wait-section").hidden = waits.length === 0;
    setText("out-verdict", p.verdict);
    var b = p.band;
    setText("out-band", "Sensitivity band: self-hosting stays cheaper than the cheapest like-for-like option from "
      + vol(b.cheapest_low) + " to " + vol(b.cheapest_high) + " tasks/mo (chosen baseline: "
      + vol(b.crossover_low) + " to " + vol(b.crossover_high) + "); self-hosted "
      + money(b.monthly_usd_low) + " to " + money(b.monthly_usd_high) + "/mo at your volume.");
    setText("out-stt-gpus", String(s.stt_gpus));
    setText("out-llm-gpus", String(s.llm_gpus));
    setText("out-layout", (s.chosen === "packed"
      ? s.total_gpus + " shared " + p.gpu.name + " GPU(s), Whisper + LLM at 0.5 + 0.5. "
      : s.total_gpus + " dedicated " + p.gpu.name + " GPU(s). ") + s.note);
    setText("out-self", money(p.self_hosted.monthly_usd) + "/mo");
    setText("out-self-task", money(p.self_hosted.per_task_usd) + " per task · " + p.gpu.instance_type);
    setText("out-managed", money(p.managed.monthly_usd) + "/mo");
    setText("out-managed-task", money(p.managed.per_task_usd) + " per task · " + p.inputs.managed_stt + " + " + p.bedrock_model);
    var cc = p.crossover_cheapest, co = p.crossover;
    setText("out-crossover", cc.status === "always_cheaper" ? "from the first task"
      : cc.tasks_per_month ? "from " + num(cc.tasks_per_month, 0) + " tasks/mo"
      : cc.ranges.length ? cc.ranges.length + " window(s)" : "none");
    setText("out-ranges", "Self-hosting is cheaper than every like-for-like option in: " + rangesText(cc.ranges, 6) + ".");
    var sv = p.savings_monthly_usd;
    setText("out-savings", (sv >= 0 ? "Self-hosting saves " : "Managed saves ") + money(Math.abs(sv))
      + "/mo (" + num(Math.abs(p.savings_pct), 1) + "%) against the chosen baseline. " + co.message);
    itemsTable("self-items", p.self_hosted);
    itemsTable("managed-items", p.managed);
    setText("advice", adviceText(p.replica_advice));
    var ul = $("sources");
    ul.innerHTML = "";
    Object.keys(p.sources).forEach(function (id) {
      var src = p.sources[id];
      var li = document.createElement("li");
      li.textContent = id + ": " + src.title + " (as of " + src.as_of + ")" + (src.url ? " " + src.url : "");
      ul.appendChild(li);
    });
    var notes = $("notes");
    notes.innerHTML = "";
    p.notes.forEach(function (n) {
      var li = document.createElement("li");
      li.textContent = n;
      notes.appendChild(li);
    });
    drawChart(p);
  }

  function el(name, attrs, text) {
    var e = document.createElementNS(SVG_NS, name);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function niceTicks(max, n) {
    if (!(max > 0)) return [0];
    var raw = max / n;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; })
      .filter(function (s) { return s >= raw; })[0];
    var ticks = [];
    for (var v = 0; v <= max + 1e-9; v += step) ticks.push(v);
    return ticks;
  }

  function short(v) {
    if (v >= 1e9) return num(v / 1e9, 1) + "B";
    if (v >= 1e6) return num(v / 1e6, 1) + "M";
    if (v >= 1e3) return num(v / 1e3, 1) + "k";
    return num(v, 0);
  }

  function drawChart(p) {
    var W = 760, H = 380, L = 78, R = 20, T = 34, B = 48;
    var c = p.curve;
    var xs = c.tasks_per_month;
    var xmax = xs[xs.length - 1];
    var band = p.band;
    var highs = band.self_hosted_high_usd.filter(function (y) { return y !== null; });
    var ymax = Math.max.apply(null, c.self_hosted_usd.concat(c.managed_usd, highs)) * 1.08;
    var xt = niceTicks(xmax, 6), yt = niceTicks(ymax, 5);
    xmax = Math.max(xmax, xt[xt.length - 1]);
    ymax = Math.max(ymax, yt[yt.length - 1]);
    function X(v) { return L + (W - L - R) * v / xmax; }
    function Y(v) { return H - B - (H - T - B) * v / ymax; }
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Monthly cost against task volume", "data-testid": "chart-svg" });
    svg.appendChild(el("rect", { x: 0, y: 0, width: W, height: H, fill: "#fff" }));
    yt.forEach(function (v) {
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#eaeef2" }));
      svg.appendChild(el("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#59636e" }, "$" + short(v)));
    });
    xt.forEach(function (v) {
      svg.appendChild(el("line", { x1: X(v), x2: X(v), y1: H - B, y2: H - B + 4, stroke: "#59636e" }));
      svg.appendChild(el("text", { x: X(v), y: H - B + 17, "text-anchor": "middle", "font-size": 11, fill: "#59636e" }, short(v)));
    });
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#59636e" }));
    svg.appendChild(el("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#59636e" }));
    svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", "font-size": 12 }, "tasks per month"));
    svg.appendChild(el("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12,
      transform: "rotate(-90 14 " + (T + H - B) / 2 + ")" }, "USD per month"));

    function path(ys) {
      return xs.map(function (x, i) { return (i ? "L" : "M") + X(x).toFixed(1) + "," + Y(ys[i]).toFixed(1); }).join(" ");
    }
    var up = [], down = [];
    xs.forEach(function (x, i) {
      var lo = band.self_hosted_low_usd[i], hi = band.self_hosted_high_usd[i];
      if (lo === null || hi === null) return;
      up.push(X(x).toFixed(1) + "," + Y(Math.min(hi, ymax)).toFixed(1));
      down.unshift(X(x).toFixed(1) + "," + Y(lo).toFixed(1));
    });
    if (up.length) {
      svg.appendChild(el("path", { d: "M" + up.concat(down).join(" L") + " Z", fill: "#1f6feb", "fill-opacity": 0.14,
        stroke: "none", "data-series": "band", "data-testid": "band-area" }));
    }
    if (c.cheapest_managed_usd && c.cheapest_managed_usd.length) {
      svg.appendChild(el("path", { d: path(c.cheapest_managed_usd), fill: "none", stroke: "#bf8700", "stroke-width": 1.6,
        "stroke-dasharray": "8 3 2 3", "data-series": "cheapest-managed" }));
    }
    svg.appendChild(el("path", { d: path(c.managed_usd), fill: "none", stroke: "#d1242f", "stroke-width": 2.2, "data-series": "managed" }));
    svg.appendChild(el("path", { d: path(c.self_hosted_usd), fill: "none", stroke: "#1f6feb", "stroke-width": 2.2, "data-series": "self-hosted" }));

    var v = p.inputs.tasks_per_month;
    if (v <= xmax) {
      svg.appendChild(el("line", { x1: X(v), x2: X(v), y1: T, y2: H - B, stroke: "#8250df", "stroke-dasharray": "2 3" }));
      svg.appendChild(el("text", { x: X(v) + 4, y: T + 10, "font-size": 11, fill: "#8250df" }, "your volume"));
    }
    (p.crossover_cheapest.ranges || []).forEach(function (r) {
      if (r.from_tasks > xmax) return;
      var x0 = X(r.from_tasks), x1 = X(r.to_tasks === null ? xmax : Math.min(r.to_tasks, xmax));
      svg.appendChild(el("rect", { x: x0, y: T, width: Math.max(1, x1 - x0), height: H - T - B, fill: "#2da44e",
        "fill-opacity": 0.13, "data-testid": "cheaper-range" }));
    });
    var co = p.crossover;
    if (co.status === "found" && co.tasks_per_month <= xmax) {
      var cx = X(co.tasks_per_month), cy = Y(co.self_hosted_usd);
      svg.appendChild(el("line", { x1: cx, x2: cx, y1: T, y2: H - B, stroke: "#444", "stroke-dasharray": "6 4", "data-testid": "crossover-line" }));
      svg.appendChild(el("circle", { cx: cx, cy: cy, r: 5, fill: "#444", "data-testid": "crossover-marker" }));
      var right = cx < W - 200;
      svg.appendChild(el("text", { x: cx + (right ? 8 : -8), y: cy - 10, "text-anchor": right ? "start" : "end",
        "font-size": 12, "font-weight": 600 }, "crossover " + num(co.tasks_per_month, 0) + " tasks/mo"));
    }
    // legend
    svg.appendChild(el("line", { x1: L + 10, x2: L + 34, y1: 16, y2: 16, stroke: "#1f6feb", "stroke-width": 3 }));
    svg.appendChild(el("text", { x: L + 40, y: 20, "font-size": 12 }, "self-hosted (" + p.gpu.name + ", " + p.sizing.chosen + ")"));
    svg.appendChild(el("line", { x1: L + 260, x2: L + 284, y1: 16, y2: 16, stroke: "#d1242f", "stroke-width": 3 }));
    svg.appendChild(el("text", { x: L + 290, y: 20, "font-size": 12 }, "managed (" + p.inputs.managed_stt + " + " + p.bedrock_model + ")"));
    var box = $("chart");
    box.innerHTML = "";
    box.appendChild(svg);
  }

  function fillSelect(id, names) {
    var sel = $(id);
    sel.innerHTML = "";
    names.forEach(function (n) {
      var o = document.createElement("option");
      o.value = n; o.textContent = n;
      sel.appendChild(o);
    });
  }

  function init(options) {
    presets = options.presets || {};
    fillSelect("gpu", Object.keys(options.gpus).map(function (g) { return g; }));
    Array.prototype.forEach.call($("gpu").options, function (o) {
      var g = options.gpus[o.value];
      o.textContent = o.value + " (" + g.instance_type + ", " + g.vram_gb + " GB, $" + g.on_demand_usd_per_hour + "/h)";
    });
    fillSelect("stt_model", Object.keys(options.stt_models));
    fillSelect("llm_model", Object.keys(options.llm_models));
    fillSelect("bedrock_model", options.bedrock_models);
    fillSelect("managed_stt", options.managed_stt || ["aws-transcribe"]);
    fillSelect("support_plan", options.support_plans || ["none"]);
    Array.prototype.forEach.call($("bedrock_model").options, function (o) {
      var state = (options.lifecycle || {})[o.value];
      if (state && state !== "active") o.textContent = o.value + " (" + (state === "soon" ? "retires soon" : state) + ")";
    });
    fillForm(options.defaults);
    fillForm(presets["seed-example"] || {});
    form.addEventListener("input", schedule);
    form.addEventListener("change", schedule);
    form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });
    $("load-seed").addEventListener("click", function () {
      fillForm(options.defaults);
      fillForm(presets["seed-example"] || {});
      submit();
    });
    submit();
  }

  fetch("/v1/plan/options", { headers: headers() }).then(function (r) {
    if (!r.ok) throw new Error(keyHint(r));
    return r.json();
  }).then(init).catch(function (e) {
    setText("form-error", "Cannot load planner options: " + e);
    document.body.dataset.state = "error";
  });
})();
