// The studio's report page: per-label precision-recall curves (SVG) with a threshold slider each, and the save.
"use strict";
(function () {
  if (document.body.dataset.page !== "studio-report") return;
  const box = document.getElementById("report");
  if (!box) return;
  const NS = "http://www.w3.org/2000/svg";
  const W = 220, H = 160, PAD = 28;
  let view = null;
  const sliders = {};

  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.append(e);
    return e;
  }
  const x = (recall) => PAD + recall * (W - PAD - 6);
  const y = (precision) => H - PAD - precision * (H - PAD - 6);

  // precision and recall when predicting the label for score >= t (the curve's points are sorted by threshold)
  function at(points, t) {
    const p = points.find((q) => q.threshold >= t);
    return p ? { precision: p.precision, recall: p.recall } : { precision: null, recall: 0 };
  }
  function fmt(v) { return v === null ? "–" : v.toFixed(3); }

  function curve(label) {
    const points = view.curves[label];
    const fig = document.createElement("figure");
    fig.className = "curve";
    fig.dataset.label = label;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `precision-recall curve of ${label}` }, fig);
    el("line", { x1: PAD, y1: H - PAD, x2: W - 6, y2: H - PAD, class: "axis" }, svg);
    el("line", { x1: PAD, y1: 6, x2: PAD, y2: H - PAD, class: "axis" }, svg);
    const tx = el("text", { x: W / 2, y: H - 6, class: "lbl" }, svg); tx.textContent = "recall";
    const ty = el("text", { x: 4, y: 14, class: "lbl" }, svg); ty.textContent = "precision";
    const d = points.slice().reverse().map((p, i) => (i ? "L" : "M") + x(p.recall).toFixed(1) + "," + y(p.precision).toFixed(1)).join(" ");
    el("path", { d, class: "pr" }, svg);
    const dot = el("circle", { r: 4, class: "dot" }, svg);
    const cap = document.createElement("figcaption");
    const id = "th-" + label.replace(/[^A-Za-z0-9_-]/g, "_");
    const name = document.createElement("strong"); name.textContent = label;
    const lab = document.createElement("label"); lab.htmlFor = id; lab.textContent = " threshold ";
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: "0", max: "1", step: "any", id });
    input.value = view.thresholds[label];
    const out = document.createElement("output"); out.htmlFor = id; out.className = "pr-at";
    cap.append(name, lab, input, out);
    fig.append(cap);
    function update() {
      const t = Number(input.value);
      const r = at(points, t);
      out.textContent = `${t.toFixed(3)}: precision ${fmt(r.precision)}, recall ${fmt(r.recall)}`;
      dot.setAttribute("cx", x(r.recall)); dot.setAttribute("cy", y(r.precision === null ? 1 : r.precision));
    }
    sliders[label] = { input, update, moved: false };
    input.addEventListener("input", () => { sliders[label].moved = true; update(); });
    update();
    return fig;
  }

  async function load() {
    view = await window.studio.call(box.dataset.json, "GET");
    const holder = document.getElementById("curves");
    view.labels.forEach((label) => holder.append(curve(label)));
    box.dataset.ready = "1";
  }
  document.getElementById("reset-thresholds").addEventListener("click", () => {
    for (const label in sliders) {
      sliders[label].input.value = view.trained_thresholds ? view.trained_thresholds[label] : 0.5;
      sliders[label].moved = true;
      sliders[label].update();
    }
  });
  document.getElementById("save-thresholds").addEventListener("click", async () => {
    const status = document.getElementById("save-status");
    const thresholds = {};
    // only the labels whose slider was moved: the others keep their exact thresholds
    for (const label in sliders) if (sliders[label].moved) thresholds[label] = Number(sliders[label].input.value);
    try {
      const data = await window.studio.call(box.dataset.save, "POST", { thresholds });
      status.textContent = "saved into the bundle: " + Object.entries(data.thresholds).map(([k, v]) => k + " " + v).join(", ");
      status.className = "ok";
    } catch (err) { status.textContent = "not saved: " + err.message; status.className = "bad"; }
  });
  load();
})();
