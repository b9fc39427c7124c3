// Trades the one-time token in the address's fragment for a session cookie, then opens the
// dashboard. The fragment never reaches a server, a log or a Referer header; it is removed
// from the address bar and history before anything else happens.
"use strict";
(function () {
  const status = document.getElementById("status");
  const match = /^#token=([0-9a-f]{64})$/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", "/login");
  status.textContent = "Logging in…";
  fetch("/api/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: match[1] }),
    credentials: "same-origin",
  })
    .then(async (answer) => {
      if (answer.ok) {
        location.replace("/#/live");
        return;
      }
      const body = await answer.json().catch(() => null);
      status.textContent =
        (body && body.error && body.error.message) || "The login failed (" + answer.status + ").";
    })
    .catch((error) => {
      status.textContent = "The daemon did not answer: " + error;
    });
})();
