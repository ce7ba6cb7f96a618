// The studio's online test: send a chosen file, or a microphone recording made here as 16-bit WAV (MediaRecorder
// gives webm/ogg, which the loader may not read), and show the top labels, the spectrogram and a player.
"use strict";
(function () {
  if (document.body.dataset.page !== "studio-online") return;
  const box = document.getElementById("online");
  if (!box) return;
  const $ = (id) => document.getElementById(id);
  const maxBytes = Number(box.dataset.maxBytes);

  function show(r) {
    $("online-result").hidden = false;
    $("online-label").textContent = r.unknown ? "unknown (best: " + r.best + ")" : r.label;
    const top = $("online-top");
    top.replaceChildren();
    r.top.forEach((t) => {
      const li = document.createElement("li");
      const m = document.createElement("meter");
      m.min = 0; m.max = 1; m.value = t.score;
      li.append(t.label + " " + t.score.toFixed(3) + " ", m);
      li.dataset.label = t.label; li.dataset.score = t.score;
      top.append(li);
    });
    $("online-spec").src = r.spectrogram;
    $("online-audio").src = r.audio;
    $("online-facts").textContent = r.file + ": " + r.duration_s.toFixed(2) + " s at " + r.sample_rate + " Hz, " +
      r.n_blocks + " block(s), bundle " + r.bundle;
    document.body.dataset.onlineDone = r.file;
  }
  async function send(blob, name) {
    $("online-error").textContent = "";
    if (blob.size > maxBytes) { $("online-error").textContent = "the clip is over the upload limit"; return; }
    const url = box.dataset.url.replace("VERSION", encodeURIComponent($("online-version").value)) +
      "?name=" + encodeURIComponent(name);
    try { show(await window.studio.call(url, "POST", blob)); }
    catch (err) { $("online-error").textContent = err.message; }
  }
  $("online-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("online-file").files[0];
    if (!file) { $("online-error").textContent = "choose a clip first"; return; }
    send(file, file.name);
  });

  // ---- recording: raw samples from a ScriptProcessor, written as a mono 16-bit WAV
  let rec = null;
  function wav(chunks, rate) {
    const n = chunks.reduce((a, c) => a + c.length, 0);
    const buf = new ArrayBuffer(44 + 2 * n);
    const v = new DataView(buf);
    const text = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
    text(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); text(8, "WAVE"); text(12, "fmt ");
    v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true);
    v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true); text(36, "data");
    v.setUint32(40, 2 * n, true);
    let o = 44;
    chunks.forEach((c) => { for (let i = 0; i < c.length; i++, o += 2) v.setInt16(o, Math.max(-1, Math.min(1, c[i])) * 32767, true); });
    return new Blob([buf], { type: "audio/wav" });
  }
  $("record").addEventListener("click", async () => {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const ctx = new AudioContext();
      const source = ctx.createMediaStreamSource(stream);
      const node = ctx.createScriptProcessor(4096, 1, 1);
      const chunks = [];
      node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
      source.connect(node); node.connect(ctx.destination);
      rec = { stream, ctx, node, chunks };
      $("record").hidden = true; $("record-stop").hidden = false;
      $("record-status").textContent = "recording…";
    } catch (err) { $("online-error").textContent = "no microphone: " + err.message; }
  });
  $("record-stop").addEventListener("click", async () => {
    if (!rec) return;
    rec.node.disconnect(); rec.stream.getTracks().forEach((t) => t.stop());
    const rate = rec.ctx.sampleRate;
    await rec.ctx.close();
    const blob = wav(rec.chunks, rate);
    rec = null;
    $("record").hidden = false; $("record-stop").hidden = true;
    $("record-status").textContent = "recorded " + (blob.size / 2 / rate).toFixed(1) + " s";
    send(blob, "recording.wav");
  });
})();
