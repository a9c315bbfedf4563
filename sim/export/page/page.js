// The replay page's script: the run's tape (the JSON above) played in the browser. A position
// is how many steps have been taken: 0 before the first line, N after the last. The board at a
// position is rebuilt from the nearest key frame and the steps' changes since.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const N = D.steps.length;
  const KEY = 64;
  const STEPS_PER_S = 4; // a virtual run plays this many scheduling steps a second at 1x
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // -- the board at any position ----------------------------------------------------------------
  const keys = [];
  (function keyFrames() {
    const s = { rows: {}, states: {}, news: "", roles: {} };
    for (let p = 0; p <= N; p++) {
      apply(s, D.deltas[p]);
      if (p % KEY === 0) keys.push(copy(s));
    }
  })();
  function copy(s) {
    return { rows: { ...s.rows }, states: { ...s.states }, news: s.news, roles: { ...s.roles } };
  }
  function apply(s, d) {
    Object.assign(s.rows, d.r);
    Object.assign(s.states, d.a);
    Object.assign(s.roles, d.o);
    if (d.n !== null && d.n !== undefined) s.news = d.n;
  }
  function boardAt(p) {
    const base = Math.floor(p / KEY);
    const s = copy(keys[base]);
    for (let q = base * KEY + 1; q <= p; q++) apply(s, D.deltas[q]);
    return s;
  }
  const ts = (p) => (p > 0 ? D.steps[p - 1][0] : 0);
  const T = Math.max(ts(N), 1e-9);
  // Where a position is along a lane: by scheduling step for a virtual run, by time otherwise.
  const xOf = (p) => (D.virtual ? p / Math.max(N, 1) : ts(p) / T);
  function positionAtX(frac) {
    if (D.virtual) return Math.round(frac * N);
    const t = frac * T;
    let lo = 0, hi = N;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (ts(mid) <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
  }
  function simTime(seconds) {
    if (!D.speedup) return "";
    const m = Math.floor((seconds * D.speedup) / 60);
    return m >= 60 ? `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min` : `${m} min`;
  }

  // -- findings: the engine's news and the checks' verdicts, merged when they say the same ----
  const notes = [];
  (function mergeNotes() {
    const verdicts = D.notices.filter((n) => n[2] !== "engine");
    const used = new Set();
    for (const [at, label, name, text] of D.notices) {
      if (name !== "engine") continue;
      const same = verdicts.find((v) => v[3] === text);
      if (same) used.add(same);
      notes.push({ at, kind: label, title: label, by: "found by the engine", text,
                   verdict: same ? `the check “${same[2]}” fails${same[1] === "shown" ? ", as this config expects" : ""}` : "" });
    }
    for (const v of verdicts) {
      if (used.has(v)) continue;
      const [at, label, name, text] = v;
      notes.push({ at, kind: label, title: name,
                   by: label === "shown" ? "shown, as this config expects" : "invariant violated",
                   text, verdict: "" });
    }
    notes.sort((a, b) => a.at - b.at);
  })();

  // -- the page's parts ---------------------------------------------------------------------------
  $("title").textContent = D.title;
  document.title = `${D.title} · sim replay`;
  $("about").textContent = [
    D.scenario && `scenario ${D.scenario}`, `${D.names.length} actors`,
    `${D.lines.length.toLocaleString()} events`, D.virtual ? `virtual clock: ${N} steps` : `${T.toFixed(3)} s of wall time`,
    D.params, D.params && "(durations in simulated minutes)",
  ].filter(Boolean).join(" · ");

  const seek = $("seek");
  seek.max = String(N);
  const speeds = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100];
  for (const s of speeds) {
    const o = el("option", "", `${s}×`);
    o.value = String(s);
    if (s === 1) o.selected = true;
    $("speed").append(o);
  }

  const gaugeEls = {};
  for (const name of D.rows) {
    const g = el("div", "gauge");
    const bar = el("div", "bar");
    const fill = el("i");
    bar.append(fill);
    const text = el("span", "text");
    g.append(el("span", "name", name), bar, text);
    $("gauges").append(g);
    gaugeEls[name] = { g, bar, fill, text };
  }
  if (!D.rows.length) $("gauges").append(el("p", "none", "no primitive with a gauge in this run"));

  // Lanes, grouped by role when there are several roles.
  const finalRoles = boardAt(N).roles;
  const groups = new Map();
  for (const name of D.names) {
    const role = finalRoles[name] || name.replace(/[-_]?\d+$/, "") || name;
    if (!groups.has(role)) groups.set(role, []);
    groups.get(role).push(name);
  }
  const longest = Math.max(4, ...D.names.map((n) => n.length));
  document.documentElement.style.setProperty("--who", `calc(${Math.min(longest, 22)}ch + 10px)`);
  const laneEls = {};
  const SVG = "http://www.w3.org/2000/svg";
  for (const [role, members] of groups) {
    if (groups.size > 1) $("lanes").append(el("div", "role", `${role} (${members.length})`));
    for (const name of members) {
      const lane = el("div", "lane");
      const pill = el("span", "pill");
      const strip = el("div", "strip");
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 1000 26");
      svg.setAttribute("preserveAspectRatio", "none");
      const segs = D.segments[name] || [];
      const first = segs.length ? segs[0][0] : N;
      addRect(svg, 0, xOf(first), "#eeeeee", "not started");
      for (const [b, e, state, color, detail] of segs) {
        addRect(svg, xOf(b), xOf(e === null ? N : e), color, `${state} ${detail}`.trim());
      }
      // What is still to come is faded: the lane says what happened, and hints at the rest.
      const future = document.createElementNS(SVG, "rect");
      future.setAttribute("y", "0");
      future.setAttribute("height", "26");
      future.setAttribute("fill", "rgba(255,255,255,0.72)");
      svg.append(future);
      const cursor = document.createElementNS(SVG, "line");
      cursor.setAttribute("y1", "0");
      cursor.setAttribute("y2", "26");
      cursor.setAttribute("stroke", "#1d2330");
      cursor.setAttribute("stroke-width", "3");
      cursor.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(cursor);
      const what = el("span", "what");
      strip.append(svg);
      strip.addEventListener("click", (ev) => {
        const box = strip.getBoundingClientRect();
        pickOp(name, positionAtX((ev.clientX - box.left) / box.width));
      });
      lane.append(el("span", "who", name), pill, what, strip);
      lane.dataset.actor = name;
      $("lanes").append(lane);
      laneEls[name] = { lane, pill, what, cursor, future };
    }
  }
  // The states the lanes show, with their colours.
  const swatches = new Map([["not started", "#eeeeee"]]);
  for (const name of D.names) for (const seg of D.segments[name] || []) {
    if (seg[5] !== "new" && !swatches.has(seg[2])) swatches.set(seg[2], seg[3]);
  }
  for (const [state, color] of swatches) {
    const s = el("span", "", state);
    s.style.setProperty("--swatch", color);
    $("legend").append(s);
  }
  function addRect(svg, x0, x1, color, title) {
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", String(x0 * 1000));
    r.setAttribute("width", String(Math.max((x1 - x0) * 1000, 0.8)));
    r.setAttribute("y", "2");
    r.setAttribute("height", "22");
    r.setAttribute("fill", color);
    const t = document.createElementNS(SVG, "title");
    t.textContent = title;
    r.append(t);
    svg.append(r);
  }

  // -- an operation's details ---------------------------------------------------------------------
  const opsOf = {};
  for (const op of D.ops) (opsOf[op.actor] ||= []).push(op);
  function pickOp(actor, p) {
    const mine = opsOf[actor] || [];
    let found = null;
    for (const op of mine) {
      const end = op.e === null ? N : op.e;
      if (op.b <= p && p <= end) found = op; // the latest begun that is in flight there
    }
    if (!found) for (const op of mine) if (op.b <= p) found = op;
    if (!found && mine.length) found = mine[0];
    showOp(found, actor);
  }
  function row(dl, key, value) {
    dl.append(el("dt", "", key), el("dd", "", value));
  }
  function showOp(op, actor) {
    const box = $("detail");
    box.replaceChildren();
    if (!op) {
      box.append(el("p", "none", `${actor} did no operation on a primitive`));
      return;
    }
    box.append(el("h3", "", `${op.actor} · ${op.op} ${op.prim}`));
    const dl = el("dl");
    row(dl, "kind", op.kind);
    row(dl, "outcome", op.outcome === "pending" ? "never returned" : op.outcome);
    row(dl, "began", `step ${op.b} · ${ts(op.b).toFixed(4)} s`);
    row(dl, "returned", op.e === null ? "—" : `step ${op.e} · ${ts(op.e).toFixed(4)} s`);
    if (op.wait !== null) {
      const sim = op.wait_min !== null ? ` = ${op.wait_min.toFixed(2)} simulated min` : "";
      row(dl, op.blocking ? "wait" : "took", `${(op.wait * 1000).toFixed(3)} ms${sim}`);
    } else {
      row(dl, "wait", "still waiting when the log ended");
    }
    for (const [label, fields] of [["invoke", op.invoke], [op.outcome, op.done]]) {
      if (!fields) continue;
      const extra = Object.entries(fields).filter(([k]) => !["event", "phase", "prim", "kind", "op", "actor"].includes(k));
      row(dl, `${label} line`, extra.map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join("  "));
    }
    box.append(dl);
    const b = op.b;
    const go = el("button", "", `go to step ${b}`);
    go.addEventListener("click", () => show(b));
    box.append(go);
  }
  function showLine(line) {
    const box = $("detail");
    box.replaceChildren(el("h3", "", `${line.actor} · ${line.event}`));
    const dl = el("dl");
    for (const [k, v] of Object.entries(line.fields)) {
      row(dl, k, typeof v === "string" ? v : JSON.stringify(v));
    }
    box.append(dl);
  }

  // -- drawing one position -----------------------------------------------------------------------
  let pos = 0;
  function show(p) {
    pos = Math.max(0, Math.min(N, p));
    const s = boardAt(pos);
    seek.value = String(pos);
    const step = pos > 0 ? D.steps[pos - 1] : null;
    let clock = `step ${pos} / ${N}`;
    if (step && step[1] !== null) clock += ` · scheduling step ${step[1]}`;
    clock += ` · ${ts(pos).toFixed(3)} s`;
    if (D.speedup) clock += ` = ${simTime(ts(pos))} simulated`;
    $("clock").textContent = clock;
    for (const name of D.rows) {
      const r = s.rows[name];
      const g = gaugeEls[name];
      if (!r) { g.text.textContent = ""; g.fill.style.width = "0"; continue; }
      const [value, cap, text] = r;
      const frac = cap ? Math.max(0, Math.min(1, value / cap)) : 0;
      g.fill.style.width = `${(100 * frac).toFixed(1)}%`;
      g.bar.classList.toggle("full", (cap !== null && cap > 0 && value >= cap) || text.includes("OUTSIDE"));
      g.bar.style.visibility = cap ? "visible" : "hidden";
      g.text.textContent = text;
    }
    const counts = { "not started": 0, running: 0, blocked: 0, done: 0 };
    for (const name of D.names) {
      const st = s.states[name];
      const e = laneEls[name];
      counts[st ? st[5] : "not started"] += 1;
      const label = st ? st[0] : "not started";
      e.pill.textContent = label;
      e.pill.style.background = st ? st[3] : "#eeeeee";
      e.what.textContent = st ? st[2] : "";
      e.lane.classList.toggle("new", !st || st[1] === "new");
      const x = 1000 * xOf(pos);
      e.cursor.setAttribute("x1", String(x));
      e.cursor.setAttribute("x2", String(x));
      e.future.setAttribute("x", String(x));
      e.future.setAttribute("width", String(Math.max(1000 - x, 0)));
    }
    const chips = $("counts");
    chips.replaceChildren();
    for (const [what, n] of Object.entries(counts)) {
      chips.append(el("span", `chip ${what === "blocked" && n ? "blocked" : what === "done" ? "done" : ""}`, `${n} ${what}`));
    }
    const list = $("findings");
    list.replaceChildren();
    const seen = notes.filter((n) => n.at <= pos);
    if (!seen.length) list.append(el("p", "none", "nothing yet"));
    for (const n of seen) {
      const box = el("div", `note ${n.kind}${n.at === pos ? " now" : ""}`);
      box.append(el("div", "label", `${n.title} · ${n.by} · step ${n.at}`));
      box.append(el("div", "text", n.text));
      if (n.verdict) box.append(el("div", "dim", n.verdict));
      box.addEventListener("click", () => show(n.at));
      list.append(box);
    }
    const here = $("step");
    here.replaceChildren();
    if (step) {
      for (let i = step[2]; i < step[3]; i++) {
        const line = D.lines[i];
        const li = el("li", line.op !== null ? "op" : "", line.text);
        li.addEventListener("click", () => (line.op !== null ? showOp(D.ops[line.op]) : showLine(line)));
        here.append(li);
      }
    } else {
      here.append(el("li", "none", "before the first line: press ▶ or →"));
    }
    const ended = pos >= N;
    $("summary").hidden = !ended; // only at the end: before it, it would give the ending away
    document.body.dataset.position = String(pos);
  }

  // -- the summary, for the end -------------------------------------------------------------------
  (function summary() {
    const body = $("summary-body");
    if (D.metrics.length) {
      const t = el("table");
      for (const [label, value] of D.metrics) {
        const tr = el("tr");
        tr.append(el("td", "", label), el("td", "", value));
        t.append(tr);
      }
      body.append(t);
    }
    const v = el("table");
    const words = { pass: "pass", fail: "FAIL", skip: "skip", expected: "shown" };
    for (const [status, name, detail] of D.verdicts) {
      const tr = el("tr");
      tr.append(el("td", `st-${status}`, words[status] || status), el("td", "", name), el("td", "dim", detail));
      v.append(tr);
    }
    body.append(el("h2", "", "Invariants"), v);
    const line = `${D.status}${D.reason && D.status !== "ok" ? `: ${D.reason}` : ""} · recorded status ${D.recorded} · log ${D.log}`;
    body.append(el("p", D.status === "ok" ? "st-pass" : "st-fail", line));
  })();

  // -- playing --------------------------------------------------------------------------------------
  let playing = false;
  let last = 0;
  let clock = 0;
  function speed() { return Number($("speed").value); }
  function setPlaying(on) {
    playing = on;
    $("play").textContent = on ? "⏸ pause" : "▶ play";
    if (on) {
      if (pos >= N) show(0);
      clock = D.virtual ? 0 : ts(pos);
      last = performance.now();
      requestAnimationFrame(frame);
    }
  }
  function frame(now) {
    if (!playing) return;
    const dt = Math.min((now - last) / 1000, 0.25);
    last = now;
    let target;
    if (D.virtual) {
      clock += dt * speed() * STEPS_PER_S;
      const whole = Math.floor(clock);
      clock -= whole;
      target = pos + whole;
    } else {
      clock += dt * speed();
      target = pos;
      while (target < N && ts(target + 1) <= clock) target++;
    }
    // A finding stops the play where it happens: the moment to talk about.
    const next = notes.find((n) => n.at > pos);
    if (next && next.at <= target) { target = next.at; setPlaying(false); }
    if (target >= N) { target = N; setPlaying(false); }
    if (target !== pos) show(target);
    if (playing) requestAnimationFrame(frame);
  }
  const stepBy = (d) => { setPlaying(false); show(pos + d); };
  const nextFinding = () => {
    setPlaying(false);
    const next = notes.find((n) => n.at > pos);
    if (next) show(next.at);
  };
  $("play").addEventListener("click", () => setPlaying(!playing));
  $("back").addEventListener("click", () => stepBy(-1));
  $("forward").addEventListener("click", () => stepBy(1));
  $("start").addEventListener("click", () => { setPlaying(false); show(0); });
  $("end").addEventListener("click", () => { setPlaying(false); show(N); });
  $("finding").addEventListener("click", nextFinding);
  seek.addEventListener("input", () => { setPlaying(false); show(Number(seek.value)); });
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLSelectElement) return;
    const keys = {
      " ": () => setPlaying(!playing), ArrowRight: () => stepBy(1), ArrowLeft: () => stepBy(-1),
      Home: () => { setPlaying(false); show(0); }, End: () => { setPlaying(false); show(N); },
      n: nextFinding,
    };
    const act = keys[ev.key];
    if (act && !(ev.target instanceof HTMLInputElement && ev.key.startsWith("Arrow"))) {
      ev.preventDefault();
      act();
    }
  });
  show(0);
})();
