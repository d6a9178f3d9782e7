// The inbox: refreshes the list of pending requests every 5 s while the page is visible.
// Data is only ever placed with textContent; strings come from the template's data-* attributes.
(() => {
  "use strict";

  const root = document.getElementById("inbox");
  if (!root) return;
  const list = document.getElementById("requests");
  const empty = document.getElementById("requests-empty");
  const status = document.getElementById("inbox-status");
  const INTERVAL = 5000;
  const serverNow = Number(root.dataset.serverNow) * 1000 + 500; // whole seconds, truncated
  const skew = Number.isFinite(serverNow) && serverNow > 0 ? serverNow - Date.now() : 0;
  const lang = document.documentElement.lang || undefined;
  let relative = null;
  try {
    relative = new Intl.RelativeTimeFormat(lang, { numeric: "always" });
  } catch (_error) {
    relative = null;
  }

  let lastSignature = null;
  let knownIds = new Set(Array.from(list.querySelectorAll("a[href]"), (a) => a.getAttribute("href")));
  let timer = null;
  let stopped = false;
  let inFlight = false;

  function expiresText(iso) {
    const left = Math.round((Date.parse(iso) - (Date.now() + skew)) / 1000);
    if (!Number.isFinite(left)) return "";
    if (left <= 0) return root.dataset.expiredText;
    let phrase;
    if (relative) {
      phrase = left >= 90 ? relative.format(Math.round(left / 60), "minute") : relative.format(left, "second");
    } else {
      phrase = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    }
    return root.dataset.expiresTemplate.replace("{relative}", phrase);
  }

  function span(className, text) {
    const element = document.createElement("span");
    element.className = className;
    element.textContent = text;
    return element;
  }

  function item(request) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.className = "request-card";
    a.href = request.url;
    a.append(span("agent", request.agent));
    if (request.binding_message) a.append(span("binding", request.binding_message));
    a.append(span("scopes-line", request.scopes.join(", ")));
    const meta = span("meta", expiresText(request.expires_at));
    meta.dataset.expiresAt = request.expires_at;
    a.append(meta);
    li.append(a);
    return li;
  }

  function refreshTimes() {
    for (const meta of list.querySelectorAll(".meta[data-expires-at]")) {
      meta.textContent = expiresText(meta.dataset.expiresAt);
    }
  }

  function render(requests) {
    const signature = JSON.stringify(requests.map((r) => [r.id, r.agent, r.binding_message, r.scopes, r.expires_at]));
    if (signature !== lastSignature) {
      lastSignature = signature;
      // Rebuild only when something changed, so that a link being focused keeps its focus between polls.
      const focusedHref = document.activeElement && list.contains(document.activeElement)
        ? document.activeElement.getAttribute("href")
        : null;
      list.replaceChildren(...requests.map(item));
      if (focusedHref) {
        const again = Array.from(list.querySelectorAll("a[href]")).find((a) => a.getAttribute("href") === focusedHref);
        if (again) again.focus();
      }
      const arrived = requests.some((r) => !knownIds.has(r.url));
      knownIds = new Set(requests.map((r) => r.url));
      if (arrived) status.textContent = root.dataset.newText;
    }
    list.hidden = requests.length === 0;
    empty.hidden = requests.length !== 0;
    refreshTimes();
  }

  async function poll() {
    timer = null;
    if (stopped || inFlight || document.hidden) return;
    inFlight = true;
    try {
      const response = await fetch(root.dataset.pendingUrl, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      const type = response.headers.get("Content-Type") || "";
      if (response.redirected || !type.startsWith("application/json")) {
        // Signed out (the login page answered): stop rather than poll a page that is not ours.
        stopped = true;
        return;
      }
      if (response.ok) {
        const data = await response.json();
        if (Array.isArray(data.requests)) render(data.requests);
      }
    } catch (_error) {
      // Offline for a moment: keep the list as it is and try again on the next round.
    } finally {
      inFlight = false;
    }
    schedule();
  }

  function schedule() {
    if (stopped || inFlight || timer !== null || document.hidden) return;
    timer = setTimeout(poll, INTERVAL);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    } else if (timer === null) {
      poll();
    }
  });

  refreshTimes();
  schedule();
})();
