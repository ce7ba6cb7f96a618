// The studio's deploy page: start `fieldear deploy` as a job and follow its steps and verdict (it goes on without
// the page; a reopened page picks it up).
"use strict";
(function () {
  if (document.body.dataset.page !== "studio-deploy") return;
  const box = document.getElementById("deployer");
  if (!box) return;
  const $ = (id) => document.getElementById(id);
  const secs = (s) => (s === null || s === undefined ? "–" : Math.round(s) + " s");

  function show(s) {
    if (!s) return;
    $("deploy-progress").hidden = false;
    $("d-number").textContent = s.number;
    $("d-version").textContent = s.version;
    $("d-host").textContent = s.host + (s.dry_run ? " (dry run)" : "");
    $("d-status").textContent = s.status;
    const running = s.status === "running";
    $("deploy-send").disabled = running;
    const lines = s.log_tail || [];
    const steps = lines.filter((l) => l.startsWith("deploy: "));
    $("d-step").textContent = steps.length ? steps[steps.length - 1].slice(8) : (running ? "starting" : "–");
    $("d-elapsed").textContent = running ? secs(s.elapsed_s) : (s.ended_utc ? "ended " + s.ended_utc : "");
    $("d-verdict").textContent = running ? "" : s.status === "done"
      ? (s.dry_run ? "Dry run: the commands below were not run." : "Deployed; the device is healthy.")
      : s.status === "failed" ? "Not deployed: see the log (an unhealthy device is rolled back)." : s.status;
    $("d-verdict").className = s.status === "failed" ? "bad" : "ok";
    $("d-log").textContent = lines.join("\n");
    document.body.dataset.deployStatus = s.status;
  }
  const poll = window.studio.poller(box.dataset.state, (data) => show(data.state),
    (err) => { $("deploy-error").textContent = err.message; }, 700);
  $("deploy-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    $("deploy-error").textContent = "";
    try {
      const data = await window.studio.call(box.dataset.start, "POST",
        { host: f.host.value, version: f.version.value, dry_run: f.dry_run.checked });
      show(data.state); poll();
    } catch (err) { $("deploy-error").textContent = err.message; }
  });
  poll();
})();
