// A choropleth world map in SVG: TopoJSON decoding and the Natural Earth projection, no library.
//
// The shapes are server/static/world-110m.json, generated at build time from the npm package
// world-atlas (see web/build-world-map.mjs); countries carry ISO 3166-1 alpha-2 ids.

const SVG = "http://www.w3.org/2000/svg";
const RADIANS = Math.PI / 180;

/** Natural Earth I (Šavrič et al. 2015), as in d3-geo: [λ, φ] radians to planar [x, y]. */
export function naturalEarth(lambda, phi) {
  const phi2 = phi * phi;
  const phi4 = phi2 * phi2;
  return [
    lambda * (0.8707 - 0.131979 * phi2 + phi4 * (-0.013791 + phi4 * (0.003971 * phi2 - 0.001529 * phi4))),
    phi * (1.007226 + phi2 * (0.015085 + phi4 * (-0.044475 + 0.028874 * phi2 - 0.005916 * phi4))),
  ];
}

const SCALE = 160; // planar units to SVG units

function project(longitude, latitude) {
  const [x, y] = naturalEarth(longitude * RADIANS, latitude * RADIANS);
  return [x * SCALE, -y * SCALE];
}

/** Decode a quantized TopoJSON topology's arcs into [longitude, latitude] lists. */
function decodeArcs(topology) {
  const { scale, translate } = topology.transform;
  return topology.arcs.map((arc) => {
    let x = 0;
    let y = 0;
    return arc.map(([dx, dy]) => {
      x += dx;
      y += dy;
      return [x * scale[0] + translate[0], y * scale[1] + translate[1]];
    });
  });
}

function ringPoints(indices, arcs) {
  const points = [];
  for (const index of indices) {
    const arc = index < 0 ? arcs[~index].slice().reverse() : arcs[index];
    arc.forEach((point, k) => {
      if (k > 0 || points.length === 0) points.push(point);
    });
  }
  return points;
}

/**
 * Rings cut at the antimeridian (Russia, Fiji) jump from +180 to -180: unwrap them to run
 * continuously, and draw them twice, 360° apart; the sphere's clip keeps the right parts.
 */
function unwrap(points) {
  let shift = 0;
  let crosses = false;
  const out = [[points[0][0], points[0][1]]];
  for (let k = 1; k < points.length; k++) {
    const delta = points[k][0] - points[k - 1][0];
    if (delta > 180) shift -= 360;
    else if (delta < -180) shift += 360;
    if (shift !== 0) crosses = true;
    out.push([points[k][0] + shift, points[k][1]]);
  }
  return { points: out, crosses };
}

function pathOf(points, offset = 0) {
  let d = "";
  points.forEach(([longitude, latitude], k) => {
    const [x, y] = project(longitude + offset, latitude);
    d += `${k ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
  });
  return `${d}Z`;
}

function geometryPath(geometry, arcs) {
  const polygons = geometry.type === "Polygon" ? [geometry.arcs] : geometry.arcs;
  let d = "";
  for (const polygon of polygons) {
    for (const ring of polygon) {
      const { points, crosses } = unwrap(ringPoints(ring, arcs));
      d += pathOf(points);
      if (crosses) {
        const mean = points.reduce((sum, p) => sum + p[0], 0) / points.length;
        d += pathOf(points, mean > 0 ? -360 : 360);
      }
    }
  }
  return d;
}

function sphereOutline() {
  const points = [];
  for (let lat = -90; lat <= 90; lat += 2) points.push(project(-180, lat));
  for (let lat = 90; lat >= -90; lat -= 2) points.push(project(180, lat));
  return `M${points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join("L")}Z`;
}

function graticule() {
  let d = "";
  for (let lon = -180; lon <= 180; lon += 30) {
    for (let lat = -80; lat <= 80; lat += 4) {
      const [x, y] = project(lon, lat);
      d += `${lat === -80 ? "M" : "L"}${x.toFixed(1)},${y.toFixed(1)}`;
    }
  }
  for (let lat = -60; lat <= 60; lat += 30) {
    for (let lon = -180; lon <= 180; lon += 4) {
      const [x, y] = project(lon, lat);
      d += `${lon === -180 ? "M" : "L"}${x.toFixed(1)},${y.toFixed(1)}`;
    }
  }
  return d;
}

function element(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

/** Sequential colour stops for 1+ viewers, darkest first; countries without viewers use NONE. */
export const RAMP = ["#173a66", "#1f5a9c", "#2c7fd4", "#56a5f6", "#b9ddff"];
export const NONE = "#1a2231";

function rgb(hex) {
  const n = Number.parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

const STOPS = RAMP.map(rgb);

/**
 * The colour of `viewers` out of `max`: continuous along RAMP by the square root of the share,
 * so that one big country does not flatten the rest and one viewer is still visible.
 */
export function colourFor(viewers, max) {
  if (!viewers || !max) return NONE;
  const t = Math.sqrt(Math.min(viewers, max) / max) * (STOPS.length - 1);
  const i = Math.min(Math.floor(t), STOPS.length - 2);
  const f = t - i;
  const mix = STOPS[i].map((c, k) => Math.round(c + (STOPS[i + 1][k] - c) * f));
  return `#${mix.map((c) => c.toString(16).padStart(2, "0")).join("")}`;
}

export class WorldMap {
  /**
   * @param {HTMLElement} container where the SVG goes
   * @param {object} topology the TopoJSON from world-110m.json
   * @param {{tooltip?: HTMLElement, legend?: HTMLElement, name?: (code: string) => string}} options
   */
  constructor(container, topology, options = {}) {
    this.options = options;
    this.paths = new Map(); // alpha-2 -> [SVGPathElement]
    this.values = new Map();
    const arcs = decodeArcs(topology);
    // Crop to the inhabited latitudes (Antarctica is left out of the data).
    const [left] = project(-180, 0);
    const [right] = project(180, 0);
    const [, top] = project(0, 84);
    const [, bottom] = project(0, -57);
    const svg = element("svg", {
      class: "world-map",
      viewBox: `${left - 2} ${top - 2} ${right - left + 4} ${bottom - top + 4}`,
      role: "img",
      "aria-label": "World map of viewers by country",
      preserveAspectRatio: "xMidYMid meet",
    });
    const defs = element("defs");
    const clip = element("clipPath", { id: "world-map-sphere" });
    clip.append(element("path", { d: sphereOutline() }));
    defs.append(clip);
    svg.append(defs);
    const world = element("g", { "clip-path": "url(#world-map-sphere)" });
    world.append(element("path", { class: "sphere", d: sphereOutline() }));
    world.append(element("path", { class: "graticule", d: graticule() }));
    for (const geometry of topology.objects.countries.geometries) {
      const path = element("path", {
        class: "country",
        d: geometryPath(geometry, arcs),
        fill: NONE,
        "data-country": geometry.id,
        "data-name": geometry.properties?.name ?? geometry.id,
      });
      if (!this.paths.has(geometry.id)) this.paths.set(geometry.id, []);
      this.paths.get(geometry.id).push(path);
      world.append(path);
    }
    svg.append(world);
    container.replaceChildren(svg);
    this.svg = svg;
    this.#hover(container);
  }

  /** Colour the map: `viewers` maps alpha-2 codes to counts. */
  update(viewers) {
    this.values = new Map(Object.entries(viewers).filter(([, n]) => n > 0));
    const max = Math.max(0, ...this.values.values());
    for (const [code, paths] of this.paths) {
      const n = this.values.get(code) ?? 0;
      for (const path of paths) {
        path.setAttribute("fill", colourFor(n, max));
        path.dataset.viewers = String(n);
      }
    }
    this.#legend(max);
  }

  #legend(max) {
    const legend = this.options.legend;
    if (!legend) return;
    const ramp = document.createElement("div");
    ramp.className = "ramp";
    ramp.style.background = `linear-gradient(90deg, ${NONE} 0 12%, ${RAMP.join(", ")})`;
    const labels = document.createElement("div");
    labels.className = "ramp-labels";
    const low = document.createElement("span");
    low.textContent = "0";
    const high = document.createElement("span");
    high.textContent = max ? `${max.toLocaleString("en")}` : "–";
    labels.append(low, high);
    const title = document.createElement("span");
    title.textContent = "Viewers per country";
    legend.replaceChildren(title, ramp, labels);
  }

  #hover(container) {
    const tooltip = this.options.tooltip;
    if (!tooltip) return;
    const name = this.options.name ?? ((code) => code);
    container.addEventListener("pointermove", (event) => {
      const target = event.target;
      if (!(target instanceof SVGPathElement) || !target.dataset.country) {
        tooltip.hidden = true;
        return;
      }
      const code = target.dataset.country;
      const n = this.values.get(code) ?? 0;
      tooltip.textContent = `${name(code, target.dataset.name)} · ${n.toLocaleString("en")} watching`;
      const box = tooltip.offsetParent?.getBoundingClientRect() ?? { left: 0, top: 0 };
      tooltip.style.left = `${event.clientX - box.left}px`;
      tooltip.style.top = `${event.clientY - box.top}px`;
      tooltip.hidden = false;
    });
    container.addEventListener("pointerleave", () => {
      tooltip.hidden = true;
    });
  }
}

/** Fetch the shapes and draw the map. */
export async function loadWorldMap(container, options) {
  const response = await fetch("/static/world-110m.json");
  if (!response.ok) throw new Error(`world map: HTTP ${response.status}`);
  return new WorldMap(container, await response.json(), options);
}
