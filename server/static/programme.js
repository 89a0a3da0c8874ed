// The programme (/): every studio, live or not, with its viewers, updated live.

import {
  audienceByStudio,
  codecName,
  count,
  countryName,
  placeOf,
  flag,
  h,
  hueFor,
  icon,
  liveBadge,
  markNavigation,
  plural,
  setText,
  subscribeAudience,
  subscribeStudios,
  watchingLabel,
} from "./ui.js";

const grid = document.getElementById("studios");
const summary = document.getElementById("summary");
const problem = document.getElementById("programme-error");
const headerStat = document.getElementById("header-stat");

let studios = [];
let audience = null; // /api/audience when the server has it

function viewersOf(studio) {
  const fromAudience = audienceByStudio(audience).get(studio.id);
  return fromAudience ? fromAudience.viewers : studio.viewers;
}

function card(studio) {
  const viewers = viewersOf(studio);
  const codecs = Object.values(studio.codecs ?? {}).map(codecName);
  const place = placeOf(studio);
  const poster = h(
    "div.poster",
    { dataset: { live: String(studio.live) } },
    liveBadge(studio.live),
    h("span.poster-flag.flag", { title: countryName(studio.country) }, flag(studio.country)),
    h("span.poster-city", {}, studio.city || studio.name),
    h("span.play", { "aria-hidden": "true" }, h("span", {}, icon("play"))),
  );
  poster.style.setProperty("--hue", String(hueFor(studio.id)));
  return h(
    "a.studio-card",
    {
      href: `/watch/${encodeURIComponent(studio.id)}`,
      dataset: { studio: studio.id, live: String(studio.live), viewers: String(viewers) },
      "aria-label": `${studio.name}, ${place}, ${studio.live ? "live" : "offline"}, ${viewers} watching`,
    },
    poster,
    h(
      "div.card-body",
      {},
      h("div.card-title", {}, studio.name),
      h("div.card-place", {}, place),
      h(
        "div.card-meta",
        {},
        h(
          "span.chips",
          {},
          codecs.length
            ? codecs.map((c) => h("span.chip", {}, c))
            : h("span.chip", {}, studio.live ? "…" : "Starts soon"),
        ),
        watchingLabel(viewers),
      ),
    ),
  );
}

const cards = new Map(); // studio id -> {signature, node}: only changed cards are rebuilt

function render() {
  grid.setAttribute("aria-busy", "false");
  const nodes = studios.map((studio) => {
    const signature = JSON.stringify([studio, viewersOf(studio)]);
    let entry = cards.get(studio.id);
    if (!entry || entry.signature !== signature) {
      entry = { signature, node: card(studio) };
      cards.set(studio.id, entry);
    }
    return entry.node;
  });
  const same =
    nodes.length === grid.children.length && nodes.every((node, i) => grid.children[i] === node);
  if (!same) grid.replaceChildren(...nodes);
  const live = studios.filter((s) => s.live).length;
  const watching = audience ? audience.viewers : studios.reduce((n, s) => n + s.viewers, 0);
  setText(document.getElementById("stat-live"), `${live}/${studios.length}`);
  setText(document.getElementById("stat-watching"), count(watching));
  const cities = studios.length === 1 ? "1 studio" : `${studios.length} studios`;
  setText(
    summary,
    live
      ? `${cities} · ${live} live now · ${plural(watching, "viewer", "viewers")} watching`
      : `${cities} · none live yet: the programme starts soon`,
  );
  headerStat.replaceChildren(watchingLabel(watching));
  headerStat.dataset.count = String(watching);
}

markNavigation();

subscribeStudios((list, error) => {
  if (error) {
    problem.hidden = false;
    setText(problem, "The programme cannot be reached right now; retrying…");
    return;
  }
  problem.hidden = true;
  // Live studios first, each group in programme order.
  studios = [...list.filter((s) => s.live), ...list.filter((s) => !s.live)];
  render();
});

subscribeAudience((update) => {
  audience = update;
  if (studios.length) render();
});
