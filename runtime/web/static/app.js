// fieldear serve: review buttons and keyboard shortcuts (detections), self-refresh (live). No build step.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const reviewer = document.getElementById("reviewer");
  if (reviewer) {
    reviewer.value = localStorage.getItem("fieldear-reviewer") || "";
    reviewer.addEventListener("change", () => localStorage.setItem("fieldear-reviewer", reviewer.value.trim()));
  }
  const page = document.body.dataset.page;

  async function review(row, action) {
    const body = { action: action };
    if (action === "relabel") body.label = row.querySelector("select.relabel").value;
    const by = reviewer && reviewer.value.trim();
    if (by) body.by = by;
    const verdict = row.querySelector(".verdict");
    verdict.textContent = "saving…";
    try {
      const resp = await fetch("/api/events/" + row.dataset.id + "/review", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
      });
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.error || resp.statusText);
      const r = data.review;
      row.classList.remove("confirm", "reject", "relabel");
      row.classList.add("reviewed", r.verdict);
      verdict.textContent = r.verdict + (r.verdict === "confirm" ? "" : " → " + r.label) + " by " + r.reviewer;
    } catch (err) {
      verdict.textContent = "error: " + err.message;
      row.classList.add("failed");
    }
  }

  function detections() {
    const rows = Array.from(document.querySelectorAll("tr.event"));
    let current = -1;
    function select(i) {
      if (!rows.length) return;
      current = Math.max(0, Math.min(rows.length - 1, i));
      rows.forEach((r, k) => r.classList.toggle("selected", k === current));
      rows[current].scrollIntoView({ block: "nearest" });
    }
    rows.forEach((row, i) => {
      row.addEventListener("click", () => select(i));
      row.querySelectorAll("button.act").forEach((b) =>
        b.addEventListener("click", (ev) => { ev.stopPropagation(); select(i); review(row, b.dataset.action); }));
      const sel = row.querySelector("select.relabel");
      sel.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") { ev.preventDefault(); review(row, "relabel"); sel.blur(); }
        if (ev.key === "Escape") sel.blur();
      });
    });
    document.addEventListener("keydown", (ev) => {
      const tag = (ev.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "select" || tag === "textarea" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (ev.key === "j" || ev.key === "ArrowDown") { select(current + 1); ev.preventDefault(); return; }
      if (ev.key === "k" || ev.key === "ArrowUp") { select(current - 1); ev.preventDefault(); return; }
      if (current < 0) { if ("crl ".includes(ev.key)) select(0); else return; }
      const row = rows[current];
      if (!row) return;
      if (ev.key === "c") review(row, "confirm");
      else if (ev.key === "r") review(row, "reject");
      else if (ev.key === "l") { ev.preventDefault(); row.querySelector("select.relabel").focus(); }
      else if (ev.key === " ") {
        const audio = row.querySelector("audio");
        if (audio) { ev.preventDefault(); if (audio.paused) audio.play(); else audio.pause(); }
      }
    });
  }

  function text(id, value) { const el = document.getElementById(id); if (el) el.textContent = value; }
  function dash(v, suffix) { return v === null || v === undefined ? "–" : v + (suffix || ""); }

  async function refresh() {
    try {
      const resp = await fetch("/api/status", { credentials: "same-origin" });
      if (!resp.ok) throw new Error(resp.statusText);
      const s = await resp.json();
      const beat = s.heartbeat || {};
      const running = document.getElementById("st-running");
      running.textContent = s.running ? "running" : "NOT running";
      running.className = "v " + (s.running ? "ok" : "bad");
      text("st-how", s.how + (s.systemd_state ? ": " + s.systemd_state : ""));
      text("st-level", s.level ? s.level.rms_dbfs + " dBFS rms" : "–");
      text("st-level-sub", s.level ? "peak " + s.level.peak_dbfs + " dBFS, event " + s.level.event_id : "");
      text("st-bps", dash(s.blocks_per_s));
      text("st-blocks", (beat.blocks || 0) + " blocks, " + (beat.events || 0) + " events");
      text("st-overruns", dash(s.overruns));
      text("st-dropped", "dropped blocks " + (beat.dropped_blocks || 0));
      text("st-disk", s.disk_free_mb === null ? "–" : (s.disk_free_mb / 1000).toFixed(1) + " GB");
      text("st-temp", s.cpu_temp_c === null ? "n/a" : s.cpu_temp_c.toFixed(1) + " °C");
      text("st-beat", "last heartbeat: " + (beat.t_utc || "none") +
        (s.heartbeat_age_s !== null ? " (" + Math.round(s.heartbeat_age_s) + " s ago)" : ""));
      const problems = document.getElementById("st-problems");
      problems.replaceChildren(...s.problems.map((p) => { const li = document.createElement("li"); li.textContent = p; return li; }));
      const tbody = document.getElementById("st-events");
      tbody.replaceChildren(...s.last_events.map((e) => {
        const tr = document.createElement("tr");
        [e.id, e.start_utc, e.label, e.peak.toFixed(2), e.verdict || ""].forEach((v) => {
          const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
        });
        return tr;
      }));
      text("refreshed", "(updated " + new Date().toLocaleTimeString() + ", every 5 s)");
    } catch (err) {
      text("refreshed", "(refresh failed: " + err.message + ")");
    }
  }

  async function post(url, body) {
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error + (data.hint ? " (" + data.hint + ")" : ""));
    return data;
  }

  function model() {
    const button = document.getElementById("retrain");
    const stateBox = document.getElementById("retrain-state");
    let timer = null;
    function show(r) {
      const p = document.createElement("p");
      p.append("Last retrain ");
      const v = document.createElement("strong"); v.id = "rt-version"; v.textContent = r.version; p.append(v, ": ");
      const st = document.createElement("strong"); st.id = "rt-status"; st.textContent = r.status;
      st.className = r.status === "done" ? "ok" : (r.status === "failed" ? "bad" : "");
      p.append(st, " (started " + r.started_utc + (r.elapsed_s !== undefined ? ", " + r.elapsed_s + " s so far" : "") + ")");
      const pre = document.createElement("pre"); pre.id = "rt-log"; pre.className = "log"; pre.textContent = r.log_tail.join("\n");
      stateBox.replaceChildren(p, pre);
      button.disabled = r.status === "running";
      if (r.status !== "running") { clearInterval(timer); timer = null; if (r.status === "done") location.reload(); }
    }
    async function poll() {
      try {
        const resp = await fetch("/api/model", { credentials: "same-origin" });
        const m = await resp.json();
        if (m.retrain) show(m.retrain);
      } catch (err) { /* the next poll tries again */ }
    }
    button.addEventListener("click", async () => {
      button.disabled = true;
      try { show((await post("/api/model/retrain")).retrain); timer = timer || setInterval(poll, 3000); }
      catch (err) { stateBox.replaceChildren(Object.assign(document.createElement("p"), { id: "rt-status", className: "bad", textContent: "error: " + err.message })); button.disabled = false; }
    });
    if (button.disabled) timer = setInterval(poll, 3000);
    document.querySelectorAll("button.switch").forEach((b) => b.addEventListener("click", async () => {
      const out = document.getElementById("switch-result");
      if (!confirm("Switch the listener to " + b.dataset.version + "?")) return;
      out.textContent = "switching…";
      try {
        const r = await post("/api/model/switch", { version: b.dataset.version });
        out.textContent = "switched to " + r.switched + " (was " + r.previous + "); " + r.reload;
        setTimeout(() => location.reload(), 1500);
      } catch (err) { out.textContent = "error: " + err.message; }
    }));
  }

  if (page === "detections") detections();
  if (page === "model") model();
  if (page === "live") setInterval(refresh, 5000);
})();
