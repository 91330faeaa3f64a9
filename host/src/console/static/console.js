// Paddock console: progressive enhancement only; every page works without it.
"use strict";

// Interactions whose schema asks for confirmation (`requiresConfirm`).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm === "true" && !window.confirm("Are you sure?")) {
    event.preventDefault();
  }
});
