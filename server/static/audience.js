// The audience (/audience): viewers per country on a world map, ranked, per studio; live.

import {
  count,
  countryName,
  flag,
  h,
  isCountry,
  liveBadge,
  markNavigation,
  setText,
  subscribeAudience,
  subscribeStudios,
  watchingLabel,
} from "./ui.js";
import { loadWorldMap } from "./world-map.js";

const $ = (id) => document.getElementById(id);

let map = null;
let studios = [];
let audience = null; // /api/audience, or null while the server has none
let hasAudienceApi = null;
let showAll = false;
const COUNTRIES_SHOWN = 12;

$("more-countries").addEventListener("click", () => {
  showAll = !showAll;
  render();
});

window.meridianAudience = {
  get audience() {
    return audience;
  },
};

function tileValue(id, value) {
  const element = $(id);
  setText(element, value === null ? "–" : count(value));
  element.dataset.count = value === null ? "" : String(value);
}

function nameOf(code, fallback) {
  return isCountry(code) ? countryName(code) : (fallback ?? "Unknown");
}

function render() {
  const byStudio = new Map((audience?.studios ?? []).map((s) => [s.id, s]));
  const total = audience ? audience.viewers : studios.reduce((n, s) => n + s.viewers, 0);

  tileValue("t-viewers", total);
  tileValue("t-countries", audience ? audience.countries_now : null);
  tileValue("t-countries-start", audience ? audience.countries_since_start : null);
  tileValue("t-sessions", audience ? audience.sessions_since_start : null);
  const header = $("header-stat");
  header.replaceChildren(watchingLabel(total));
  header.dataset.count = String(total);

  const fallback = $("fallback");
  fallback.hidden = hasAudienceApi !== false;
  setText(
    fallback,
    "Per-country figures are not available from this server (no /api/audience); " +
      "showing viewers per studio only.",
  );
  setText(
    $("updated"),
    audience
      ? `${count(total)} watching in ${audience.countries_now} ${
          audience.countries_now === 1 ? "country" : "countries"
        } · updated ${new Date().toLocaleTimeString("en-GB")}`
      : `${count(total)} watching · updated ${new Date().toLocaleTimeString("en-GB")}`,
  );

  // Countries, most viewers first; the map takes the same figures.
  const countries = audience?.countries ?? [];
  const top = countries[0]?.viewers ?? 0;
  const list = $("countries");
  const shown = showAll ? countries : countries.slice(0, COUNTRIES_SHOWN);
  list.replaceChildren(
    ...shown.map((entry, i) => {
      const item = h(
        "li",
        { dataset: { country: entry.country, viewers: String(entry.viewers) } },
        h("span.rank", {}, String(i + 1)),
        h("span.flag", {}, flag(entry.country)),
        h("span.name", {}, nameOf(entry.country)),
        h("span.n", {}, count(entry.viewers)),
      );
      item.style.setProperty("--share", `${top ? (entry.viewers / top) * 100 : 0}%`);
      return item;
    }),
  );
  if (!countries.length) {
    list.replaceChildren(
      h("li.empty", {}, audience ? "No one is watching right now." : "Not available."),
    );
  }
  const more = $("more-countries");
  more.hidden = countries.length <= COUNTRIES_SHOWN;
  setText(
    more,
    showAll ? "Show the top countries only" : `Show all ${countries.length} countries`,
  );
  map?.update(Object.fromEntries(countries.map((c) => [c.country, c.viewers])));

  // Studios, in programme order, with their leading countries.
  const totals = $("studio-totals");
  totals.replaceChildren(
    ...studios.map((studio) => {
      const entry = byStudio.get(studio.id);
      const viewers = entry ? entry.viewers : studio.viewers;
      const leaders = Object.entries(entry?.countries ?? {})
        .sort((a, b) => b[1] - a[1])
        .slice(0, 3)
        .map(([code, n]) => `${flag(code)} ${count(n)}`)
        .join("  ");
      return h(
        "li",
        { dataset: { studio: studio.id, viewers: String(viewers) } },
        h("span.flag", {}, flag(studio.country)),
        h(
          "span.who",
          {},
          h("b", {}, studio.city || studio.name),
          h("span", {}, leaders || (studio.live ? "no viewers yet" : "off air")),
        ),
        h("span", {}, h("span.n", {}, count(viewers)), " ", liveBadge(studio.live)),
      );
    }),
  );
}

markNavigation();

loadWorldMap($("map"), {
  tooltip: $("tooltip"),
  legend: $("legend"),
  name: (code, fallback) => nameOf(code, fallback),
})
  .then((loaded) => {
    map = loaded;
    render();
  })
  .catch((error) => {
    $("map").replaceChildren(h("p.empty", {}, `The map cannot be shown: ${error.message}`));
  });

subscribeStudios((list) => {
  if (!list) return;
  studios = list;
  render();
});

subscribeAudience((update) => {
  audience = update;
  hasAudienceApi = update !== null;
  render();
});
