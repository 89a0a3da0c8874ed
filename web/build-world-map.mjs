// Builds server/static/world-110m.json, the audience page's world map, from registry packages.
//
//   make world-map        (npm ci in web/, then this script)
//
// Input: world-atlas's countries-110m.json (Natural Earth 1:110m, public domain), a TopoJSON
// topology whose countries carry ISO 3166-1 *numeric* ids, and i18n-iso-countries' code table.
// Output: the same topology (quantized arcs kept as they are, so the file stays ~100 KB) with
// ISO 3166-1 alpha-2 ids, the ids Meridian's audience API and metrics use, Antarctica and the
// unused `land` object left out, and a `meridian` member saying where it came from. The page
// loads it from Meridian itself: nothing is fetched from a CDN at run time.

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const output = join(here, "..", "server", "static", "world-110m.json");

const readJson = (path) => JSON.parse(readFileSync(path, "utf8"));
const atlasPackage = readJson(join(modules, "world-atlas", "package.json"));
const codesPackage = readJson(join(modules, "i18n-iso-countries", "package.json"));
const atlas = readJson(join(modules, "world-atlas", "countries-110m.json"));
const codes = readJson(join(modules, "i18n-iso-countries", "codes.json"));

const alpha2ByNumeric = new Map(codes.map(([alpha2, , numeric]) => [numeric, alpha2]));
// Natural Earth shapes without an ISO numeric code: Kosovo has the alpha-2 code in common use;
// the other two are counted under the country that GeoIP databases place their addresses in.
const unnumbered = { Kosovo: "XK", "N. Cyprus": "CY", Somaliland: "SO" };
const leftOut = new Set(["AQ"]); // Antarctica: a third of the map's height, no audience

const geometries = [];
for (const geometry of atlas.objects.countries.geometries) {
  const name = geometry.properties.name;
  const id = geometry.id === undefined ? unnumbered[name] : alpha2ByNumeric.get(geometry.id);
  if (id === undefined) throw new Error(`no ISO alpha-2 code for ${name} (${geometry.id})`);
  if (leftOut.has(id)) continue;
  geometries.push({ type: geometry.type, id, properties: { name }, arcs: geometry.arcs });
}

// Keep only the arcs still referenced (arc i is referenced as i, or reversed as ~i).
const used = new Map();
const remap = (index) => {
  const arc = index < 0 ? ~index : index;
  if (!used.has(arc)) used.set(arc, used.size);
  const kept = used.get(arc);
  return index < 0 ? ~kept : kept;
};
const walk = (arcs) => (typeof arcs[0] === "number" ? arcs.map(remap) : arcs.map(walk));
for (const geometry of geometries) geometry.arcs = walk(geometry.arcs);
const arcs = new Array(used.size);
for (const [arc, kept] of used) arcs[kept] = atlas.arcs[arc];

const topology = {
  type: "Topology",
  meridian: {
    shapes: `world-atlas@${atlasPackage.version} countries-110m.json (Natural Earth 1:110m, public domain)`,
    codes: `i18n-iso-countries@${codesPackage.version}`,
    generator: "web/build-world-map.mjs",
  },
  transform: atlas.transform,
  objects: { countries: { type: "GeometryCollection", geometries } },
  arcs,
};
writeFileSync(output, `${JSON.stringify(topology)}\n`);
console.log(`wrote ${output}: ${geometries.length} shapes, ${arcs.length} arcs`);
