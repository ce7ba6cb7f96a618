// Shared by the studio's job pages (train, batch): one JSON call with the CSRF header; errors carry the hint.
"use strict";
window.studioCall = async function (url, method, body) {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const resp = await fetch(url, {
    method, credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({ error: resp.statusText }));
  if (!resp.ok) throw new Error(data.error + (data.hint ? " (" + data.hint + ")" : ""));
  return data;
};
