// Paddock console: progressive enhancement only; every page works without it.
"use strict";

// Interactions whose schema asks for confirmation (`requiresConfirm`).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm === "true" && !window.confirm("Are you sure?")) {
    event.preventDefault();
  }
});

// Live updates (a device page, an installation's invocations): the server
// pushes what happens (the monitors' WebSocket transport); on each batch
// the page is fetched again and its `data-refresh` sections swapped in
// place, at most twice a second.
const live = document.querySelector("[data-live]");
if (live) {
  const sections = Array.from(document.querySelectorAll("[data-refresh]")).map((s) => "." + s.classList[0]);
  let pending = null;
  const refresh = async () => {
    pending = null;
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const next = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const selector of sections) {
      const now = document.querySelector(selector);
      const fresh = next.querySelector(selector);
      if (now && fresh) now.replaceWith(document.importNode(fresh, true));
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  };
  const connect = (delay) => {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + window.location.host + live.dataset.live);
    socket.addEventListener("open", () => { document.body.dataset.live = "open"; delay = 1000; });
    socket.addEventListener("message", () => { if (!pending) pending = setTimeout(refresh, 500); });
    socket.addEventListener("close", () => {
      document.body.dataset.live = "closed";
      setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    });
  };
  connect(1000);
}
