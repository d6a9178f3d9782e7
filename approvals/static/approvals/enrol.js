// "Get approval requests on this phone": subscribe this browser to Web Push, list and remove devices.
// Strings come from the template's data-* attributes; data is only ever placed with textContent.
(() => {
  "use strict";

  const root = document.getElementById("enrol");
  // Without the Web Push channel the page says so itself, and there is nothing to do.
  if (!root || root.dataset.webpushEnabled !== "true") return;
  const d = root.dataset;
  const button = document.getElementById("enrol-button");
  const enrolStatus = document.getElementById("enrol-status");
  const list = document.getElementById("devices");
  const empty = document.getElementById("devices-empty");
  const devicesStatus = document.getElementById("devices-status");
  const lang = document.documentElement.lang || undefined;

  class NotEnabled extends Error {}

  const say = (element, text, kind) => {
    element.textContent = text;
    element.dataset.kind = kind || "";
  };

  const supported = () =>
    "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;

  function urlBase64ToUint8Array(base64url) {
    const padding = "=".repeat((4 - (base64url.length % 4)) % 4);
    const base64 = (base64url + padding).replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(base64);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function sameKey(buffer, bytes) {
    if (!buffer) return false;
    const current = new Uint8Array(buffer);
    return current.length === bytes.length && current.every((value, i) => value === bytes[i]);
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.status === 404) throw new NotEnabled();
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
  }

  function post(url, body) {
    const headers = { "X-CSRFToken": d.csrfToken, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(url, {
      method: "POST",
      headers,
      credentials: "same-origin",
      // Django's CSRF check compares the Origin header, which a "no-referrer" policy would turn into "null".
      referrerPolicy: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  function formatDate(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    try {
      return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }).format(date);
    } catch (_error) {
      return date.toLocaleString();
    }
  }

  function describe(device) {
    // "Chrome on Android" is more than a person needs from a user agent string; keep it short and readable.
    const ua = device.user_agent || "";
    const browsers = [["Edg/", "Edge"], ["Firefox/", "Firefox"], ["SamsungBrowser/", "Samsung Internet"],
      ["Chrome/", "Chrome"], ["Safari/", "Safari"]];
    const systems = [["Android", "Android"], ["iPhone", "iPhone"], ["iPad", "iPad"], ["Mac OS X", "macOS"],
      ["Windows", "Windows"], ["Linux", "Linux"]];
    const browser = (browsers.find(([needle]) => ua.includes(needle)) || [])[1];
    const system = (systems.find(([needle]) => ua.includes(needle)) || [])[1];
    const name = [browser, system].filter(Boolean).join(" · ");
    return name || d.labelUnknown;
  }

  function row(device) {
    const li = document.createElement("li");
    li.className = "device";
    const text = document.createElement("div");
    text.className = "device-text";
    const name = document.createElement("strong");
    name.textContent = describe(device);
    text.append(name);
    const lines = [d.labelAdded.replace("{date}", formatDate(device.created_at))];
    if (device.last_success_at) lines.push(d.labelLastSuccess.replace("{date}", formatDate(device.last_success_at)));
    for (const line of lines) {
      const span = document.createElement("span");
      span.className = "meta";
      span.textContent = line;
      text.append(span);
    }
    if (device.disabled) {
      const warning = document.createElement("span");
      warning.className = "meta warning";
      warning.textContent = d.labelDisabled;
      text.append(warning);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "button secondary small";
    remove.textContent = d.labelRemove;
    remove.setAttribute("aria-label", d.labelRemoveNamed.replace("{device}", describe(device)));
    remove.addEventListener("click", () => removeDevice(device.id, remove));
    li.append(text, remove);
    return li;
  }

  async function loadDevices() {
    try {
      const data = await getJson(d.devicesUrl);
      const devices = Array.isArray(data.devices) ? data.devices : [];
      list.replaceChildren(...devices.map(row));
      empty.hidden = devices.length !== 0;
      return true;
    } catch (error) {
      if (error instanceof NotEnabled) {
        notEnabled();
      } else {
        say(devicesStatus, d.msgLoadFailed, "error");
      }
      return false;
    }
  }

  function notEnabled() {
    // The channel was turned off since the page was rendered.
    button.hidden = true;
    document.getElementById("devices-block").hidden = true;
    say(enrolStatus, d.msgNotEnabled, "error");
  }

  async function removeDevice(id, control) {
    control.disabled = true;
    try {
      const response = await post(d.removeUrl.replace("/0/", `/${encodeURIComponent(id)}/`));
      if (response.status !== 204 && response.status !== 404) throw new Error(`HTTP ${response.status}`);
      await loadDevices();
      say(devicesStatus, d.msgRemoved, "success");
      // Focus would otherwise fall back to the top of the page when the row disappears.
      const next = list.querySelector("button") || button;
      next.focus();
    } catch (_error) {
      control.disabled = false;
      say(devicesStatus, d.msgRemoveFailed, "error");
    }
  }

  async function subscribe() {
    if (!supported()) {
      say(enrolStatus, d.msgUnsupported, "error");
      return;
    }
    button.disabled = true;
    root.setAttribute("aria-busy", "true");
    say(enrolStatus, d.msgWorking, "");
    try {
      // Ask first, while the tap still counts as a user gesture (Safari requires it).
      const permission = await Notification.requestPermission();
      if (permission !== "granted") {
        say(enrolStatus, d.msgBlocked, "error");
        return;
      }
      const registration = await navigator.serviceWorker.register(d.serviceWorkerUrl, { scope: "/" });
      await navigator.serviceWorker.ready;
      const { publicKey } = await getJson(d.vapidUrl);
      const applicationServerKey = urlBase64ToUint8Array(publicKey);
      let subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameKey(subscription.options && subscription.options.applicationServerKey, applicationServerKey)) {
        // Made for another server key (the keys were rotated): it can never be used again.
        await subscription.unsubscribe();
        subscription = null;
      }
      if (!subscription) {
        subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey });
      }
      const response = await post(d.devicesUrl, subscription.toJSON());
      if (response.status === 404) throw new NotEnabled();
      if (!response.ok) {
        let message = d.msgFailed;
        try {
          const body = await response.json();
          if (body && typeof body.error === "string" && body.error) message = `${d.msgFailed} ${body.error}`;
        } catch (_error) {
          // Not JSON: the generic message will do.
        }
        say(enrolStatus, message, "error");
        return;
      }
      say(enrolStatus, d.msgSuccess, "success");
      await loadDevices();
    } catch (error) {
      if (error instanceof NotEnabled) {
        notEnabled();
        return;
      }
      say(enrolStatus, d.msgFailed, "error");
    } finally {
      root.removeAttribute("aria-busy");
      button.disabled = false;
    }
  }

  button.addEventListener("click", subscribe);
  if (!supported()) {
    say(enrolStatus, d.msgUnsupported, "error");
  }
  loadDevices();
})();
