// The approval page: a live countdown to expiry, and no double submission.
// Strings come from data-* attributes rendered (and translated) by the template.
(() => {
  "use strict";

  const section = document.getElementById("decide");
  if (!section) return;
  const form = document.getElementById("decision");
  const countdown = document.getElementById("countdown");
  const expiredNote = document.getElementById("expired-note");
  const expiresAt = Date.parse(section.dataset.expiresAt);
  // Measure against the server's clock, not the phone's: a phone set a few minutes wrong must not lie.
  // data-server-now is whole seconds (truncated): +500 ms is the better guess.
  const serverNow = Number(section.dataset.serverNow) * 1000 + 500;
  const skew = Number.isFinite(serverNow) && serverNow > 0 ? serverNow - Date.now() : 0;
  if (!Number.isFinite(expiresAt)) return;

  const pad = (n) => String(n).padStart(2, "0");
  let timer = null;

  function expire() {
    if (timer !== null) clearInterval(timer);
    for (const control of form.querySelectorAll("button, input:not([type=hidden])")) {
      control.disabled = true;
    }
    form.classList.add("is-expired");
    section.classList.add("is-expired");
    countdown.textContent = "0:00";
    expiredNote.textContent = section.dataset.expiredText;
  }

  function tick() {
    const remaining = expiresAt - (Date.now() + skew);
    if (remaining <= 0) {
      expire();
      return;
    }
    const left = Math.floor(remaining / 1000);
    const hours = Math.floor(left / 3600);
    const minutes = Math.floor((left % 3600) / 60);
    const seconds = left % 60;
    countdown.textContent = hours > 0 ? `${hours}:${pad(minutes)}:${pad(seconds)}` : `${minutes}:${pad(seconds)}`;
    section.classList.toggle("is-urgent", left <= 60);
  }

  tick();
  timer = setInterval(tick, 1000);
  // Timers are throttled in background tabs: catch up as soon as the page is visible again.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer !== null) tick();
  });

  let submitting = false;
  form.addEventListener("submit", (event) => {
    // A second tap while the first decision is on its way would only earn "can no longer be decided".
    // (Disabling the buttons here would drop the pressed button's name/value from the form data.)
    if (submitting || form.classList.contains("is-expired")) {
      event.preventDefault();
      return;
    }
    submitting = true;
    form.setAttribute("aria-busy", "true");
  });
  // Coming back through the history (bfcache) must allow deciding again if the page is still current.
  window.addEventListener("pageshow", () => {
    submitting = false;
    form.removeAttribute("aria-busy");
    tick();
  });
})();
