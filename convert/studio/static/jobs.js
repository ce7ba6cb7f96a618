// Shared by every studio page (loaded before the page's own script; no build step): the CSRF token, one fetch
// with it whose errors carry the server's hint, and the poll loop of the job pages (train, batch, deploy).
"use strict";
window.studio = (function () {
  function csrf() { return document.querySelector('meta[name="csrf-token"]').content; }

  // ``body``: undefined (nothing sent), a Blob or File (sent as it is, as octet-stream) or a value sent as JSON.
  // Resolves to the JSON answer; rejects with an Error holding the server's message and hint.
  async function call(url, method, body) {
    const raw = body instanceof Blob;
    const headers = { "X-CSRF-Token": csrf() };
    if (body !== undefined) headers["Content-Type"] = raw ? "application/octet-stream" : "application/json";
    const resp = await fetch(url, {
      method, credentials: "same-origin", headers,
      body: body === undefined ? undefined : (raw ? body : JSON.stringify(body)),
    });
    const data = await resp.json().catch(() => ({
      error: resp.status === 413 ? "too big for the server's upload limit" : resp.status + " " + resp.statusText }));
    if (!resp.ok) throw new Error(data.error + (data.hint ? " (" + data.hint + ")" : ""));
    return data;
  }

  // A poll of a job's state URL: show(data) with every answer, again after ``every`` ms while data.state is
  // running; on an error onError(err), then again after 3 s. Returns the function that polls now.
  function poller(url, show, onError, every) {
    let timer = null;
    async function poll() {
      clearTimeout(timer);
      try {
        const data = await call(url, "GET");
        show(data);
        if (data.state && data.state.status === "running") timer = setTimeout(poll, every || 1000);
      } catch (err) {
        onError(err);
        timer = setTimeout(poll, 3000);
      }
    }
    return poll;
  }

  return { csrf, call, poller };
})();
