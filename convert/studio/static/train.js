// The studio's train page: start a run, poll its progress (the run goes on without the page), cancel it.
"use strict";
(function () {
  if (document.body.dataset.page !== "studio-train") return;
  const box = document.getElementById("trainer");
  const $ = (id) => document.getElementById(id);
  const call = window.studio.call;
  function secs(s) { return s === null || s === undefined ? "–" : Math.round(s) + " s"; }

  function show(state) {
    if (!state) return;
    $("train-progress").hidden = false;
    $("run-version").textContent = state.version;
    $("run-status").textContent = state.status;
    const running = state.status === "running";
    $("train-cancel").hidden = !running;
    $("train-start").disabled = running;
    $("to-report").hidden = state.status !== "done";
    $("to-report").href = box.dataset.report + "?version=" + encodeURIComponent(state.version);
    const p = state.progress || {};
    $("p-stage").textContent = running ? (p.stage || "starting") : state.status;
    $("p-candidate").textContent = [p.candidate, p.setting].filter(Boolean).join(" · ") || "–";
    $("p-fold").textContent = p.fold ? p.fold + " of " + p.folds : "–";
    // time left: train's own estimate of the candidate's cross-validation; hidden when unknown (before it, once
    // the run is slower than estimated, after the choice), never a made-up 0 s
    const known = running && p.estimate_left_s !== null && p.estimate_left_s !== undefined;
    $("p-left").textContent = known ? "about " + secs(p.estimate_left_s) + " (train's estimate for " + p.candidate + ")" : "–";
    $("p-left").hidden = $("p-left-k").hidden = !known;
    const budget = state.settings ? state.settings.time_budget : 0;
    const left = p.budget_left_s;
    $("p-budget").textContent = !running || left === null || left === undefined ? secs(budget) + " for comparing candidates"
      : (left > 0 ? secs(left) + " left of " + secs(budget) : "used up (the first candidate always finishes)");
    $("p-elapsed").textContent = running ? secs(state.elapsed_s) : (state.ended_utc || "");
    if (known) $("p-bar").value = Math.min(1, 1 - p.estimate_left_s / p.estimate_s);
    else if (running) $("p-bar").removeAttribute("value");  // indeterminate: no honest fraction to show
    else $("p-bar").value = 1;
    $("p-log").textContent = (state.log_tail || []).join("\n");
    $("train-error").textContent = state.status === "failed" ? "The training failed: see the log below." : "";
    document.body.dataset.trainStatus = state.status;
  }
  const poll = window.studio.poller(box.dataset.state, (data) => show(data.state),
    (err) => { $("train-error").textContent = err.message; }, 1000);
  $("train-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    $("train-error").textContent = "";
    try {
      const data = await call(box.dataset.start, "POST", {
        time_budget: Number(f.time_budget.value), seed: Number(f.seed.value), folds: Number(f.folds.value) });
      show(data.state);
      poll();
    } catch (err) { $("train-progress").hidden = false; $("train-error").textContent = err.message; }
  });
  $("train-cancel").addEventListener("click", async () => {
    try { show((await call(box.dataset.cancel, "POST", {})).state); }
    catch (err) { $("train-error").textContent = err.message; }
  });
  poll();
})();
