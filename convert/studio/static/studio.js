// fieldear studio: projects, import (drop / pick / folder on disk), label by listening. No build step.
"use strict";
(function () {
  const page = document.body.dataset.page;
  const postJSON = (url, body) => window.studio.call(url, "POST", body);

  // ---------------------------------------------------------------- projects
  function projects() {
    document.querySelectorAll("form.delete-form").forEach((form) => {
      const input = form.querySelector("input[name=confirm]");
      const button = form.querySelector("button");
      input.addEventListener("input", () => { button.disabled = input.value !== input.dataset.expect; });
    });
  }

  // ---------------------------------------------------------------- import
  function importer() {
    const box = document.getElementById("import");
    const table = document.getElementById("import-results");
    const tbody = table.querySelector("tbody");
    const status = document.getElementById("import-status");
    const maxBytes = Number(box.dataset.maxBytes);
    const byFolder = document.getElementById("by-folder");
    let queue = Promise.resolve();
    const tally = { imported: 0, problems: 0, duplicates: 0 };

    function row(name) {
      table.hidden = false;
      const tr = document.createElement("tr");
      const a = document.createElement("td"), b = document.createElement("td");
      a.textContent = name; a.dataset.k = "File"; b.dataset.k = "Result"; b.textContent = "waiting…";
      tr.className = "pending"; tr.append(a, b); tbody.append(tr);
      return tr;
    }
    function show(tr, r) {
      const cell = tr.children[1];
      if (r.problem) { tr.className = "problem"; cell.textContent = "not imported: " + r.problem; tally.problems++; }
      else if (r.duplicate_of) { tr.className = "duplicate"; cell.textContent = "imported as " + r.stored + " — duplicate of " + r.duplicate_of; tally.imported++; tally.duplicates++; }
      else { tr.className = "imported"; cell.textContent = "imported as " + r.stored; tally.imported++; }
      if (r.label) cell.textContent += ", labelled " + r.label;
      else if (r.stored && byFolder.checked) cell.textContent += ", not labelled (no usable folder name)";
    }
    function fail(tr, message) { tr.className = "problem"; tr.children[1].textContent = "not imported: " + message; tally.problems++; }
    function summary() {
      status.textContent = tally.imported + " imported, " + tally.duplicates + " duplicate(s), " + tally.problems + " not imported";
    }
    async function send(file, name, tr) {
      if (file.size > maxBytes) {
        fail(tr, "too big (" + Math.round(file.size / 1048576) + " MB, the limit is " + Math.round(maxBytes / 1048576) + " MB): import it from a folder on disk");
        return;
      }
      tr.children[1].textContent = "uploading…";
      try {
        const data = await postJSON(box.dataset.upload + "?name=" + encodeURIComponent(name) + (byFolder.checked ? "&by_folder=1" : ""), file);
        data.results.forEach((r) => show(tr, r));
      } catch (err) { fail(tr, err.message); }
    }
    function add(files) {  // [[File, name shown]]: uploaded one after another, each listed at once
      files.forEach(([file, name]) => {
        const tr = row(name);
        queue = queue.then(() => send(file, name, tr)).then(summary);
      });
      status.textContent = "importing " + files.length + " file(s)…";
    }
    function fromInput(input) {
      add(Array.from(input.files).map((f) => [f, f.webkitRelativePath || f.name]));
      input.value = "";
    }
    document.getElementById("pick-files").addEventListener("change", (ev) => fromInput(ev.target));
    document.getElementById("pick-folder").addEventListener("change", (ev) => fromInput(ev.target));

    // drops: files, or folders walked through the entries API
    function readAll(reader) {
      return new Promise((resolve, reject) => {
        const out = [];
        const next = () => reader.readEntries((batch) => {
          if (!batch.length) resolve(out); else { out.push(...batch); next(); }
        }, reject);
        next();
      });
    }
    async function walk(entry, into) {
      if (entry.isFile) {
        into.push(await new Promise((res, rej) => entry.file((f) => res([f, entry.fullPath.replace(/^\//, "")]), rej)));
      } else if (entry.isDirectory) {
        for (const child of await readAll(entry.createReader())) await walk(child, into);
      }
    }
    const drop = document.getElementById("drop");
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
    ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
    drop.addEventListener("drop", async (ev) => {
      ev.preventDefault();
      const items = Array.from(ev.dataTransfer.items || []).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
      if (!items.length) { add(Array.from(ev.dataTransfer.files).map((f) => [f, f.name])); return; }
      const files = [];
      for (const entry of items) await walk(entry, files);
      add(files);
    });

    document.getElementById("folder-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const path = document.getElementById("folder-path").value.trim();
      status.textContent = "importing " + path + "…";
      queue = queue.then(async () => {
        try {
          const data = await postJSON(box.dataset.folder, { path: path, by_folder: byFolder.checked });
          data.results.forEach((r) => show(row(r.source), r));
          summary();
        } catch (err) { status.textContent = "folder not imported: " + err.message; }
      });
    });
  }

  // ---------------------------------------------------------------- label by listening
  function labeller() {
    const box = document.getElementById("labeller");
    const list = document.getElementById("clips");
    const player = document.getElementById("player");
    const now = document.getElementById("now");
    const saved = document.getElementById("saved");
    const buttons = document.getElementById("label-buttons");
    const items = list ? Array.from(list.querySelectorAll("li.clip")) : [];
    const background = box.dataset.background;
    let current = -1, anchor = -1;
    const selected = new Set();

    function paint() {
      items.forEach((li, i) => {
        const on = selected.has(i);
        li.classList.toggle("selected", on);
        li.classList.toggle("current", i === current);
        li.setAttribute("aria-selected", on ? "true" : "false");
      });
      if (list && current >= 0) list.setAttribute("aria-activedescendant", items[current].id);
      const n = selected.size;
      now.textContent = current < 0 ? "nothing selected" : items[current].dataset.file + (n > 1 ? " (+" + (n - 1) + " more selected)" : "");
    }
    function load(i) {
      const li = items[i];
      if (player.dataset.file !== li.dataset.file) {
        player.src = li.dataset.audio;
        player.dataset.file = li.dataset.file;
      }
    }
    function moveTo(i, extend) {
      if (!items.length) return;
      i = Math.max(0, Math.min(items.length - 1, i));
      if (extend) {
        if (anchor < 0) anchor = current < 0 ? i : current;
        selected.clear();
        for (let k = Math.min(anchor, i); k <= Math.max(anchor, i); k++) selected.add(k);
      } else { selected.clear(); selected.add(i); anchor = i; }
      current = i;
      load(i);
      items[i].scrollIntoView({ block: "nearest" });
      paint();
    }
    const multi = document.getElementById("multi");
    function selectAll() {
      if (!items.length) return;
      items.forEach((_, i) => selected.add(i));
      if (current < 0) { current = 0; load(0); }
      paint();
    }
    document.getElementById("select-all").addEventListener("click", selectAll);
    items.forEach((li, i) => li.addEventListener("click", (ev) => {
      if (ev.shiftKey) moveTo(i, true);
      else if (ev.ctrlKey || ev.metaKey || multi.checked) {
        if (selected.has(i)) selected.delete(i); else selected.add(i);
        current = i; anchor = i; load(i); paint();
      } else moveTo(i, false);
      list.focus({ preventScroll: true });
    }));
    items.forEach((li, i) => li.addEventListener("dblclick", () => {
      moveTo(i, false);
      player.play().catch((err) => { saved.textContent = "cannot play: " + err.message; });
    }));

    function showCounts(data) {
      const tbody = document.querySelector("#counts tbody");
      tbody.replaceChildren();
      const add = (k, v) => {
        const tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
        th.scope = "row"; th.textContent = k; td.textContent = v; tr.append(th, td); tbody.append(tr);
      };
      Object.entries(data.counts).forEach(([k, v]) => add(k, v));
      add("unlabelled", data.unlabelled);
      document.getElementById("n-unlabelled").textContent = data.unlabelled;
      const warnings = document.getElementById("warnings");
      warnings.replaceChildren(...data.warnings.map((w) => { const li = document.createElement("li"); li.textContent = w; return li; }));
    }
    function keyedLabels() { return Array.from(buttons.querySelectorAll("button.lab-btn:not(.bg):not(.none)")).map((b) => b.dataset.label); }
    function addButton(label) {
      if (label === background || keyedLabels().includes(label)) return;
      const b = document.createElement("button");
      b.type = "button"; b.className = "lab-btn"; b.dataset.label = label;
      const n = keyedLabels().length + 1;
      if (n <= 9) { const k = document.createElement("kbd"); k.textContent = n; b.append(k, " "); }
      b.append(label);
      b.addEventListener("click", () => apply(label));
      buttons.querySelector("button.bg").before(b);
    }
    let saving = Promise.resolve(), pending = 0;
    function apply(label) {  // shown at once, saved in order (one request after another)
      if (!selected.size) { saved.textContent = "select a clip first"; return; }
      const picked = Array.from(selected).sort((a, b) => a - b);
      const before = picked.map((i) => items[i].dataset.label);
      const mark = (i, lab) => {
        const li = items[i];
        li.dataset.label = lab;
        li.querySelector(".lab").textContent = lab || "unlabelled";
        li.classList.toggle("unlabelled", !lab);
      };
      picked.forEach((i) => { mark(i, label.trim()); items[i].classList.add("saving"); });
      if (picked.length === 1 && picked[0] + 1 < items.length) moveTo(picked[0] + 1, false);
      pending++;
      delete box.dataset.saved;
      saved.textContent = "saving…";
      saving = saving.then(async () => {
        try {
          const data = await postJSON(box.dataset.labels, { files: picked.map((i) => items[i].dataset.file), label: label });
          if (data.label) addButton(data.label);
          showCounts(data);
          saved.textContent = picked.length + " clip(s) → " + (data.label || "unlabelled");
        } catch (err) {
          picked.forEach((i, k) => mark(i, before[k]));
          saved.textContent = "not saved: " + err.message;
        } finally {
          picked.forEach((i) => items[i].classList.remove("saving"));
          pending--;
          if (!pending) box.dataset.saved = "yes"; else delete box.dataset.saved;
        }
      });
    }
    buttons.querySelectorAll("button.lab-btn").forEach((b) => b.addEventListener("click", () => apply(b.dataset.label)));
    document.getElementById("new-label").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = document.getElementById("new-label-name");
      const label = input.value.trim();
      if (label) { apply(label); input.value = ""; input.blur(); }
    });
    document.addEventListener("keydown", (ev) => {
      const tag = (ev.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "select" || tag === "textarea" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (tag === "button" && (ev.key === " " || ev.key === "Enter")) return;
      if (ev.key === "ArrowDown" || ev.key === "ArrowRight" || ev.key === "j") { moveTo(current + 1, ev.shiftKey); ev.preventDefault(); }
      else if (ev.key === "ArrowUp" || ev.key === "ArrowLeft" || ev.key === "k") { moveTo(current < 0 ? 0 : current - 1, ev.shiftKey); ev.preventDefault(); }
      else if (ev.key === " ") {
        ev.preventDefault();
        if (current < 0) moveTo(0, false);
        if (player.paused) player.play().catch((err) => { saved.textContent = "cannot play: " + err.message; }); else player.pause();
      } else if (/^[1-9]$/.test(ev.key)) {
        const label = keyedLabels()[Number(ev.key) - 1];
        if (label !== undefined) { apply(label); ev.preventDefault(); }
      } else if (ev.key === "b") { apply(background); ev.preventDefault(); }
      else if (ev.key === "a") { selectAll(); ev.preventDefault(); }
      else if (ev.key === "0") { apply(""); ev.preventDefault(); }
    });
    paint();
  }

  if (page === "studio-projects") projects();
  else if (page === "studio-import") importer();
  else if (page === "studio-label") labeller();
})();
