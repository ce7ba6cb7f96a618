// The studio's batch page: start `fieldear batch` over a folder, follow its progress, show rows and metrics.
"use strict";
(function () {
  if (document.body.dataset.page !== "studio-batch") return;
  const box = document.getElementById("batch");
  if (!box) return;
  const $ = (id) => document.getElementById(id);
  const call = window.studio.call;
  function cell(tr, text, key, tag) {
    const td = document.createElement(tag || "td");
    td.textContent = text; if (key) td.dataset.k = key; tr.append(td);
  }
  const f3 = (v) => (v === null || v === undefined || v === "" ? "–" : Number(v).toFixed(3));

  function show(s) {
    if (!s) return;
    $("batch-progress").hidden = false;
    $("b-number").textContent = s.number;
    $("b-status").textContent = s.status;
    $("b-bar").value = s.total ? s.done_files / s.total : 0;
    $("b-count").textContent = s.done_files + " of " + s.total + " file(s)";
    $("batch-cancel").hidden = s.status !== "running";
    $("batch-start").disabled = s.status === "running";
    $("batch-csv").hidden = !s.csv;
    if (s.csv) $("batch-csv").href = s.csv;
    document.body.dataset.batchStatus = s.status;
    if (s.status !== "done") return;
    const ev = s.evaluation;
    $("batch-metrics").hidden = false;
    $("b-eval-problem").textContent = s.evaluation_problem || "";
    const body = $("batch-labels").querySelector("tbody");
    body.replaceChildren();
    if (ev) {
      $("b-n").textContent = ev.n_evaluated + " of " + ev.n_rows;
      $("b-accuracy").textContent = f3(ev.report.accuracy);
      $("b-f1").textContent = f3(ev.report.macro.f1);
      Object.entries(ev.report.per_label).forEach(([label, m]) => {
        const tr = document.createElement("tr");
        cell(tr, label, "Label", "th"); cell(tr, f3(m.f1), "F1"); cell(tr, f3(m.precision), "Precision");
        cell(tr, f3(m.recall), "Recall"); cell(tr, m.support, "Support");
        body.append(tr);
      });
    }
    $("batch-rows").hidden = false;
    const cols = s.rows.length ? Object.keys(s.rows[0]) : [];
    const head = document.createElement("tr");
    cols.forEach((c) => cell(head, c, null, "th"));
    $("batch-table").querySelector("thead").replaceChildren(head);
    const rows = $("batch-table").querySelector("tbody");
    rows.replaceChildren();
    s.rows.forEach((r) => {
      const tr = document.createElement("tr");
      cols.forEach((c) => cell(tr, r[c], c));
      rows.append(tr);
    });
  }
  const poll = window.studio.poller(box.dataset.state, (data) => show(data.state),
    (err) => { $("batch-error").textContent = err.message; }, 700);
  $("batch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    $("batch-error").textContent = "";
    try {
      const data = await call(box.dataset.start, "POST", { folder: f.folder.value, version: f.version.value, truth: f.truth.value });
      show(data.state); poll();
    } catch (err) { $("batch-error").textContent = err.message; }
  });
  $("batch-cancel").addEventListener("click", async () => {
    try { show((await call(box.dataset.cancel, "POST", {})).state); } catch (err) { $("batch-error").textContent = err.message; }
  });
  poll();
})();
