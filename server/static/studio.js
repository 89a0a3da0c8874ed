// The studio (/studio/<studio>): go live from this browser over WHIP, with live health.

import { States, WHIPClient } from "./meridian-client.js";
import {
  codecName,
  count,
  placeOf,
  h,
  liveBadge,
  markNavigation,
  setText,
  studioFromPath,
  subscribeStudios,
  watchingLabel,
} from "./ui.js";

const studioId = studioFromPath();
const TOKEN_KEY = `meridian.token.${studioId}`;

const $ = (id) => document.getElementById(id);
const form = $("form");
const tokenInput = $("token");
const cameraSelect = $("camera");
const microphoneSelect = $("microphone");
const resolutionSelect = $("resolution");
const bitrateSelect = $("bitrate");
const goLive = $("golive");
const stopButton = $("stop");
const errorBox = $("error");
const statusLine = $("status");
const preview = $("preview");

let stream = null;
let client = null;
let studio = null;
let health = null; // the latest health sample (see sampleHealth)

window.meridianStudio = {
  studioId,
  get client() {
    return client;
  },
  get stream() {
    return stream;
  },
  get health() {
    return health;
  },
};

// ------------------------------------------------------------------ messages

function showError(title, detail) {
  errorBox.hidden = false;
  errorBox.replaceChildren(h("div", {}, h("strong", {}, title), detail));
}

function clearError() {
  errorBox.hidden = true;
  errorBox.replaceChildren();
}

function explain(error) {
  const name = studio?.name ?? studioId;
  if (error?.unauthorized) {
    const detail = error.problem?.detail ?? "the token was refused";
    return [
      "Wrong studio token",
      `Meridian did not accept this token for ${name}: ${detail} (HTTP ${error.status}). ` +
        "Check the token and try again.",
    ];
  }
  if (error?.status === 404) return ["Unknown studio", `Meridian has no studio ${studioId}.`];
  if (error?.status === 422 || error?.status === 415 || error?.status === 400) {
    return ["Meridian cannot take this stream", error.message];
  }
  return ["Could not go live", error?.message ?? String(error)];
}

// ------------------------------------------------------------------ camera and microphone

function constraints() {
  const [width, height] = resolutionSelect.value.split("x").map(Number);
  const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
  if (cameraSelect.value) video.deviceId = { exact: cameraSelect.value };
  const audio = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  if (microphoneSelect.value) audio.deviceId = { exact: microphoneSelect.value };
  return { video, audio };
}

let opening = Promise.resolve(true);

/** Open the chosen devices, one opening at a time: each swaps from the stream before it. */
function openDevices() {
  opening = opening.catch(() => false).then(openDevicesNow);
  return opening;
}

async function openDevicesNow() {
  const previous = stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(constraints());
  } catch (error) {
    showError(
      "Camera or microphone unavailable",
      `${error.name}: ${error.message}. Allow this page to use them, or pick other devices.`,
    );
    $("preview-overlay").hidden = false;
    return false;
  }
  preview.srcObject = stream;
  $("preview-overlay").hidden = true;
  // The client this stream goes to: going live can fail (and drop it) while tracks swap.
  const live = client;
  if (live) {
    for (const track of stream.getTracks()) await live.replaceTrack(track.kind, track);
    live.options.stream = stream;
  }
  for (const track of previous?.getTracks() ?? []) track.stop();
  await listDevices();
  return true;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const fill = (select, kind, label) => {
    const current = stream?.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;
    const options = devices
      .filter((d) => d.kind === `${kind}input`)
      .map((d, i) => h("option", { value: d.deviceId }, d.label || `${label} ${i + 1}`));
    select.replaceChildren(...options);
    if (current) select.value = current;
  };
  fill(cameraSelect, "video", "Camera");
  fill(microphoneSelect, "audio", "Microphone");
}

for (const select of [cameraSelect, microphoneSelect, resolutionSelect]) {
  select.addEventListener("change", () => openDevices());
}

// ------------------------------------------------------------------ going live

function selectedCodec() {
  return form.querySelector('input[name="codec"]:checked').value;
}

function setLive(on) {
  goLive.hidden = on;
  stopButton.hidden = !on;
  tokenInput.disabled = on;
  for (const input of form.querySelectorAll('input[name="codec"]')) input.disabled = on;
}

function renderStatus() {
  const state = client?.state ?? "off-air";
  document.body.dataset.studioState = state;
  const words = {
    [States.CONNECTING]: "Connecting…",
    [States.CONNECTED]: "Live",
    [States.RECONNECTING]: "Reconnecting…",
    [States.RETRYING]: "Retrying…",
    [States.FAILED]: "Refused",
    [States.CLOSED]: "Off air",
    "off-air": "Off air",
  };
  const onAir = state === States.CONNECTED;
  const badge = $("preview-badge");
  if (badge.dataset.live !== String(onAir)) {
    badge.dataset.live = String(onAir);
    badge.replaceChildren(onAir ? liveBadge(true) : "");
  }
  const tile = $("h-status");
  setText(tile.querySelector("b"), words[state] ?? state);
  tile.dataset.level =
    state === States.CONNECTED ? "good" : state === States.FAILED ? "bad" : "warn";
  if (state === States.CONNECTED) {
    const watchUrl = `/watch/${encodeURIComponent(studioId)}`;
    statusLine.replaceChildren(
      `On air with ${codecName(`video/${selectedCodec()}`)} · viewers watch at `,
      h("a", { href: watchUrl, target: "_blank", rel: "noopener" }, location.host + watchUrl),
    );
  } else {
    statusLine.replaceChildren();
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const token = tokenInput.value.trim();
  if (!token) {
    showError("Token needed", "Type this studio's bearer token to go live.");
    tokenInput.focus();
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  if (!stream && !(await openDevices())) return;
  const maxBitrate = Number(bitrateSelect.value) || null;
  client = new WHIPClient(`/whip/${encodeURIComponent(studioId)}`, {
    token,
    stream,
    videoCodec: selectedCodec(),
    maxBitrate,
  });
  client.addEventListener("statechange", renderStatus);
  const starting = client;
  // A refusal after going live (the token was changed while reconnecting, say) ends it too.
  let onAir = false;
  client.addEventListener("connected", () => {
    onAir = true;
  });
  client.addEventListener("error", (event) => {
    if (client !== starting || !onAir) return; // before that, start() rejects: see below
    showError(...explain(event.detail.error));
    client = null;
    setLive(false);
    renderStatus();
  });
  setLive(true); // Stop is there at once: connecting can be called off
  try {
    await starting.start();
  } catch (error) {
    if (error?.code === "stopped") return;
    showError(...explain(error));
    if (client === starting) client = null;
    setLive(false);
  } finally {
    renderStatus();
  }
});

stopButton.addEventListener("click", async () => {
  const ending = client;
  client = null;
  setLive(false);
  await ending?.stop();
  health = null;
  renderHealth();
  renderStatus();
});

bitrateSelect.addEventListener("change", () => {
  client?.setMaxBitrate(Number(bitrateSelect.value) || null);
});

// ------------------------------------------------------------------ live health

async function sampleHealth() {
  if (client?.state !== States.CONNECTED) return;
  const report = await client.getStats();
  const previous = health;
  const sample = { at: performance.now(), bytesSent: 0, video: null, loss: null, rtt: null };
  for (const entry of report.values()) {
    if (entry.type === "outbound-rtp") {
      sample.bytesSent += entry.bytesSent ?? 0;
      if (entry.kind === "video") {
        sample.video = {
          codec: entry.codecId ? report.get(entry.codecId)?.mimeType : null,
          frameWidth: entry.frameWidth ?? 0,
          frameHeight: entry.frameHeight ?? 0,
          framesPerSecond: entry.framesPerSecond ?? 0,
          framesEncoded: entry.framesEncoded ?? 0,
          packetsSent: entry.packetsSent ?? 0,
        };
      }
    } else if (entry.type === "remote-inbound-rtp" && entry.kind === "video") {
      if (entry.fractionLost !== undefined) sample.loss = entry.fractionLost * 100;
      if (entry.roundTripTime !== undefined) sample.rtt = entry.roundTripTime * 1000;
    } else if (entry.type === "candidate-pair" && entry.nominated && entry.state === "succeeded") {
      if (sample.rtt === null && entry.currentRoundTripTime !== undefined) {
        sample.rtt = entry.currentRoundTripTime * 1000;
      }
    }
  }
  const seconds = previous ? (sample.at - previous.at) / 1000 : 0;
  sample.bitrate =
    seconds > 0 && sample.bytesSent >= previous.bytesSent
      ? ((sample.bytesSent - previous.bytesSent) * 8) / seconds
      : null;
  health = sample;
  renderHealth();
}

function tile(id, text, level = null) {
  const element = $(id);
  setText(element.querySelector("b"), text);
  if (level) element.dataset.level = level;
  else delete element.dataset.level;
}

function renderHealth() {
  const s = health;
  const rate = s?.bitrate;
  tile(
    "h-bitrate",
    rate == null ? "–" : rate >= 1e6 ? `${(rate / 1e6).toFixed(2)} Mb/s` : `${Math.round(rate / 1e3)} kb/s`,
  );
  tile(
    "h-loss",
    s?.loss == null ? "–" : `${s.loss.toFixed(1)} %`,
    s?.loss == null ? null : s.loss < 1 ? "good" : s.loss < 5 ? "warn" : "bad",
  );
  tile(
    "h-rtt",
    s?.rtt == null ? "–" : `${Math.round(s.rtt)} ms`,
    s?.rtt == null ? null : s.rtt < 150 ? "good" : s.rtt < 400 ? "warn" : "bad",
  );
  tile("h-fps", s?.video?.framesPerSecond ? `${Math.round(s.video.framesPerSecond)} fps` : "–");
  tile(
    "h-resolution",
    s?.video?.frameWidth ? `${s.video.frameWidth}×${s.video.frameHeight}` : "–",
  );
  tile("h-codec", s?.video?.codec ? codecName(s.video.codec) : "–");
}

setInterval(() => sampleHealth().catch(() => {}), 1000);

// ------------------------------------------------------------------ the studio's listing

subscribeStudios((list) => {
  if (!list) return;
  studio = list.find((s) => s.id === studioId) ?? null;
  if (!studio) return;
  document.title = `Studio ${studio.city || studio.name} · Meridian`;
  setText($("studio-name"), studio.name);
  setText($("studio-place"), placeOf(studio));
  const viewers = $("h-viewers");
  setText(viewers.querySelector("b"), count(studio.viewers));
  viewers.dataset.count = String(studio.viewers);
  const total = list.reduce((n, s) => n + s.viewers, 0);
  $("header-stat").replaceChildren(watchingLabel(total));
});

// ------------------------------------------------------------------ go

markNavigation();
tokenInput.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
renderStatus();
openDevices();
window.addEventListener("pagehide", () => client?.stop({ keepalive: true }));
