// What Meridian's pages share: the header, flags and country names, live data from the API.

const regionNames = (() => {
  try {
    return new Intl.DisplayNames(["en"], { type: "region" });
  } catch {
    return null;
  }
})();

/**
 * An ISO 3166-1 alpha-2 code of a real place: not one of the user-assigned codes (AA, QM-QZ,
 * XA-XZ, ZZ: "unknown" and the demo studio's ZZ), Kosovo's XK aside.
 */
export function isCountry(code) {
  if (typeof code !== "string" || !/^[A-Za-z]{2}$/.test(code)) return false;
  const upper = code.toUpperCase();
  if (upper === "XK") return true;
  return !/^(AA|Q[M-Z]|X[A-Z]|ZZ)$/.test(upper);
}

/** The flag emoji of an ISO 3166-1 alpha-2 code (regional indicator symbols); 🌐 otherwise. */
export function flag(code) {
  if (!isCountry(code)) return "🌐";
  const base = 0x1f1e6 - 65;
  const upper = code.toUpperCase();
  return String.fromCodePoint(base + upper.charCodeAt(0), base + upper.charCodeAt(1));
}

/** "Germany" for "DE"; "Unknown" for anything that is not a known ISO alpha-2 code. */
export function countryName(code) {
  if (!isCountry(code)) return "Unknown";
  try {
    return regionNames?.of(code.toUpperCase()) ?? code.toUpperCase();
  } catch {
    return code.toUpperCase();
  }
}

const CODEC_NAMES = { h264: "H.264", vp8: "VP8", vp9: "VP9", av1: "AV1", opus: "Opus" };

/** "video/H264" -> "H.264". */
export function codecName(mime) {
  if (!mime) return "";
  const name = String(mime).split("/").pop();
  return CODEC_NAMES[name.toLowerCase()] ?? name;
}

const numberFormat = new Intl.NumberFormat("en");

export function count(n) {
  return numberFormat.format(n ?? 0);
}

export function plural(n, one, many) {
  return `${count(n)} ${n === 1 ? one : many}`;
}

/** Build an element: h("a.card", {href}, child, ...). Text children are escaped. */
export function h(tag, attributes = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const element = document.createElement(name);
  if (classes.length) element.className = classes.join(" ");
  for (const [key, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Set an element's text only when it changed (keeps screen readers and layout calm). */
export function setText(element, text) {
  if (element && element.textContent !== text) element.textContent = text;
}

/** "Berlin, Germany"; the city alone where the country is not a real one (the demo). */
export function placeOf(studio) {
  const country = isCountry(studio.country) ? countryName(studio.country) : "";
  return [studio.city, country].filter(Boolean).join(", ");
}

export function liveBadge(live) {
  return h(
    `span.badge.${live ? "badge-live" : "badge-offline"}`,
    { dataset: { live: live ? "true" : "false" } },
    live ? h("span.dot", { "aria-hidden": "true" }) : null,
    live ? "Live" : "Offline",
  );
}

/** The studio id in /watch/<id> or /studio/<id>. */
export function studioFromPath() {
  const parts = location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[1] ?? "");
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!response.ok) {
    const error = new Error(`${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

export async function fetchStudios() {
  return (await getJson("/api/studios")).studios;
}

/**
 * Poll GET /api/studios; `callback(studios)` on every answer, `callback(null, error)` on failure.
 * Slower while the tab is hidden, backing off on errors. Returns a function that stops it.
 */
export function subscribeStudios(callback, { interval = 2000 } = {}) {
  let stopped = false;
  let timer = null;
  let failures = 0;
  const tick = async () => {
    timer = null;
    try {
      const studios = await fetchStudios();
      failures = 0;
      if (!stopped) callback(studios, null);
    } catch (error) {
      failures += 1;
      if (!stopped) callback(null, error);
    }
    if (stopped) return;
    const wait = document.hidden ? interval * 5 : interval * Math.min(2 ** failures, 8);
    timer = setTimeout(tick, wait);
  };
  const onVisible = () => {
    if (!document.hidden && timer) {
      clearTimeout(timer);
      tick();
    }
  };
  document.addEventListener("visibilitychange", onVisible);
  tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

/**
 * The audience (GET /api/audience, pushed by GET /api/events as `event: audience`).
 *
 * `callback(audience)` with the API's JSON on each update, or `callback(null)` while the
 * server has no audience API (the pages then fall back to /api/studios' viewer counts).
 * Server-sent events when the server has them, polling otherwise. Returns a stop function.
 */
export function subscribeAudience(callback, { interval = 2000 } = {}) {
  let stopped = false;
  let source = null;
  let timer = null;
  let polling = false;

  const poll = async () => {
    timer = null;
    let wait = interval;
    try {
      const audience = await getJson("/api/audience");
      if (!stopped) callback(audience);
    } catch (error) {
      // 404: this server has no audience API (yet); look again now and then.
      if (error.status === 404) wait = interval * 5;
      if (!stopped) callback(null);
    }
    if (!stopped) timer = setTimeout(poll, document.hidden ? wait * 5 : wait);
  };
  const startPolling = () => {
    if (polling || stopped) return;
    polling = true;
    source?.close();
    source = null;
    poll();
  };

  if (typeof EventSource === "function") {
    let heard = false;
    source = new EventSource("/api/events");
    source.addEventListener("audience", (event) => {
      heard = true;
      try {
        callback(JSON.parse(event.data));
      } catch {
        // A malformed event: the next one will do.
      }
    });
    source.addEventListener("error", () => {
      // Never heard from (no such endpoint) or closed for good: poll instead. An event
      // stream that worked reconnects by itself (readyState CONNECTING).
      if (!heard || source?.readyState === EventSource.CLOSED) startPolling();
    });
    // A stream that says nothing within a few seconds is no use to a live page.
    setTimeout(() => {
      if (!heard) startPolling();
    }, 4000);
  } else {
    startPolling();
  }
  return () => {
    stopped = true;
    source?.close();
    if (timer) clearTimeout(timer);
  };
}

/** Per-studio audience from /api/audience: {id: {viewers, countries}}. */
export function audienceByStudio(audience) {
  const result = new Map();
  for (const studio of audience?.studios ?? []) result.set(studio.id, studio);
  return result;
}

/** Countries with at least one viewer, "unknown" left out. */
export function knownCountries(countries) {
  return Object.entries(countries ?? {}).filter(([code, n]) => n > 0 && isCountry(code));
}

/** Mark the current page in the header's navigation. */
export function markNavigation() {
  const path = location.pathname;
  for (const link of document.querySelectorAll(".site-nav a")) {
    const href = link.getAttribute("href");
    const current = href === "/" ? path === "/" || path.startsWith("/watch/") : path.startsWith(href);
    if (current) link.setAttribute("aria-current", "page");
  }
}

/** A simple deterministic hue for a studio, so that each card has its own colour. */
export function hueFor(text) {
  let hash = 0;
  for (const char of String(text)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

const ICONS = {
  eye: "M1.5 12s4-7.5 10.5-7.5S22.5 12 22.5 12s-4 7.5-10.5 7.5S1.5 12 1.5 12Zm10.5 3.5a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7Z",
  muted: "M11 5 6 9H2v6h4l5 4V5Zm11 4-6 6m0-6 6 6",
  sound: "M11 5 6 9H2v6h4l5 4V5Zm4.5 3.5a5 5 0 0 1 0 7m3-10a9 9 0 0 1 0 13",
  expand: "M4 9V4h5M20 9V4h-5M4 15v5h5M20 15v5h-5",
  play: "M8 5v14l11-7z",
};

/** A small stroked icon as inline SVG. */
export function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("fill", name === "play" ? "currentColor" : "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "2");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

/** "3 watching", with the eye icon; `data-count` carries the number for scripts and tests. */
export function watchingLabel(n, extra = "") {
  return h("span.watching", { dataset: { count: String(n) } }, icon("eye"), `${count(n)} watching${extra}`);
}
