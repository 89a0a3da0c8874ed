// The player (/watch/<studio>): WHEP through meridian-client.js, live audience, recovery.

import { States, WHEPClient } from "./meridian-client.js";
import {
  audienceByStudio,
  codecName,
  count,
  placeOf,
  flag,
  h,
  icon,
  knownCountries,
  liveBadge,
  markNavigation,
  setText,
  studioFromPath,
  subscribeAudience,
  subscribeStudios,
  watchingLabel,
} from "./ui.js";

const STALL_SECONDS = 6; // no new frame for this long while the studio is live: start afresh
const STATS_INTERVAL = 1000;

const studioId = studioFromPath();
const video = document.getElementById("video");
const overlay = {
  root: document.getElementById("overlay"),
  flag: document.getElementById("overlay-flag"),
  spinner: document.getElementById("overlay-spinner"),
  title: document.getElementById("overlay-title"),
  detail: document.getElementById("overlay-detail"),
};
const unmute = document.getElementById("unmute");
const fullscreen = document.getElementById("fullscreen");
const audienceLabel = document.getElementById("audience");
const statsLine = document.getElementById("stats");

const player = new WHEPClient(`/whep/${encodeURIComponent(studioId)}`, { video });

let studio = null; // this studio's entry in /api/studios
let studios = [];
let audience = null;
let stats = null; // the latest playback statistics (see readStats)
let lastFrames = 0;
let lastFrameAt = performance.now();
let liveSince = null;
let countdown = null;
let firstFrame = false;

/** Page state for people and for tests: window.meridianWatch. */
window.meridianWatch = {
  player,
  studioId,
  get stats() {
    return stats;
  },
};

// ------------------------------------------------------------------ overlay

function city() {
  return studio?.city || studio?.name || studioId;
}

function showOverlay({ title, detail = "", spinner = false, state }) {
  overlay.root.hidden = false;
  overlay.root.dataset.state = state;
  setText(overlay.flag, studio ? flag(studio.country) : "");
  overlay.spinner.hidden = !spinner;
  setText(overlay.title, title);
  setText(overlay.detail, detail);
}

function hideOverlay() {
  overlay.root.hidden = true;
  overlay.root.dataset.state = "playing";
}

function stopCountdown() {
  if (countdown) clearInterval(countdown);
  countdown = null;
}

/** "Trying again in 4 s", counting down to the client's next attempt. */
function countDown(ms, render) {
  stopCountdown();
  const until = performance.now() + ms;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - performance.now()) / 1000));
    render(left);
    if (left === 0) stopCountdown();
  };
  tick();
  countdown = setInterval(tick, 250);
}

function renderState() {
  const state = player.state;
  document.body.dataset.playerState = state;
  if (state !== States.OFFLINE && state !== States.RETRYING) stopCountdown();
  switch (state) {
    case States.IDLE:
    case States.CONNECTING:
      showOverlay({ title: `Connecting to ${city()}…`, spinner: true, state });
      break;
    case States.RECONNECTING:
      showOverlay({
        title: "Reconnecting…",
        detail: "The connection dropped; the player is setting it up again.",
        spinner: true,
        state,
      });
      break;
    case States.CONNECTED:
      if (studio && !studio.live) {
        showOverlay({
          title: `${city()} is off air`,
          detail: "Back soon: the picture returns here by itself when the studio is live again.",
          state: "off-air",
        });
      } else if (!firstFrame || isStalled()) {
        showOverlay({ title: "Waiting for the picture…", spinner: true, state: "waiting" });
      } else {
        hideOverlay();
      }
      break;
    case States.FAILED:
      showOverlay({
        title: "This stream cannot be played here",
        detail: lastError?.message ?? "The server refused the player.",
        state,
      });
      break;
    case States.CLOSED:
      showOverlay({ title: "Stopped", state });
      break;
    default:
      break;
  }
}

let lastError = null;

player.addEventListener("statechange", (event) => {
  const { state, retryIn, error } = event.detail;
  if (error) lastError = error;
  renderState();
  if (state === States.OFFLINE) {
    countDown(retryIn, (left) => {
      showOverlay({
        title: `${city()} starts soon`,
        detail:
          left > 0
            ? `The studio is not live yet. Trying again in ${left} s; the player connects by itself.`
            : "Trying again…",
        state,
      });
    });
  } else if (state === States.RETRYING) {
    countDown(retryIn, (left) => {
      showOverlay({
        title: "Meridian cannot be reached",
        detail: left > 0 ? `Trying again in ${left} s.` : "Trying again…",
        spinner: left === 0,
        state,
      });
    });
  }
});

// ------------------------------------------------------------------ sound and full screen

function renderUnmute() {
  unmute.hidden = false;
  unmute.replaceChildren(
    icon(video.muted ? "muted" : "sound"),
    video.muted ? "Tap to unmute" : "Mute",
  );
  unmute.setAttribute("aria-pressed", String(!video.muted));
}

unmute.addEventListener("click", () => {
  video.muted = !video.muted;
  if (!video.muted) video.play().catch(() => {});
  renderUnmute();
});
video.addEventListener("volumechange", renderUnmute);

fullscreen.replaceChildren(icon("expand"));
fullscreen.addEventListener("click", () => {
  const player_ = document.getElementById("player");
  if (document.fullscreenElement) document.exitFullscreen();
  else player_.requestFullscreen?.().catch(() => {});
});

// ------------------------------------------------------------------ playback statistics

function isStalled() {
  return (performance.now() - lastFrameAt) / 1000 > 2;
}

async function readStats() {
  const report = await player.getStats();
  const result = { video: null, audio: null, at: performance.now() };
  for (const entry of report.values()) {
    if (entry.type !== "inbound-rtp") continue;
    const codec = entry.codecId ? report.get(entry.codecId) : null;
    const common = {
      codec: codec?.mimeType ?? null,
      packetsReceived: entry.packetsReceived ?? 0,
      packetsLost: entry.packetsLost ?? 0,
      bytesReceived: entry.bytesReceived ?? 0,
      jitter: entry.jitter ?? 0,
    };
    if (entry.kind === "video") {
      result.video = {
        ...common,
        framesDecoded: entry.framesDecoded ?? 0,
        frameWidth: entry.frameWidth ?? 0,
        frameHeight: entry.frameHeight ?? 0,
        framesPerSecond: entry.framesPerSecond ?? 0,
        jitterBufferDelay: entry.jitterBufferDelay ?? 0,
        jitterBufferEmittedCount: entry.jitterBufferEmittedCount ?? 0,
      };
    } else if (entry.kind === "audio") {
      result.audio = { ...common, totalSamplesReceived: entry.totalSamplesReceived ?? 0 };
    }
  }
  return result;
}

function formatRate(bitsPerSecond) {
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(1)} Mb/s`;
  return `${Math.round(bitsPerSecond / 1e3)} kb/s`;
}

async function sampleStats() {
  if (player.state !== States.CONNECTED) return;
  const previous = stats;
  const current = await readStats().catch(() => null);
  if (!current) return;
  const v = current.video;
  if (v) {
    if (v.framesDecoded > lastFrames || v.framesDecoded < lastFrames) {
      if (v.framesDecoded > lastFrames) lastFrameAt = performance.now();
      lastFrames = v.framesDecoded;
    }
    if (v.framesDecoded > 0 && !firstFrame) firstFrame = true;
    const seconds = previous?.video ? (current.at - previous.at) / 1000 : 0;
    v.bitrate =
      seconds > 0 && v.bytesReceived >= previous.video.bytesReceived
        ? ((v.bytesReceived - previous.video.bytesReceived) * 8) / seconds
        : 0;
  }
  stats = current;
  renderStats();
  renderState();
  watchdog();
}

function renderStats() {
  const v = stats?.video;
  const chips = [];
  if (v?.codec) chips.push(codecName(v.codec));
  if (stats?.audio?.codec) chips.push(codecName(stats.audio.codec));
  if (v?.frameWidth) chips.push(`${v.frameWidth}×${v.frameHeight}`);
  if (v?.framesPerSecond) chips.push(`${Math.round(v.framesPerSecond)} fps`);
  if (v?.bitrate) chips.push(formatRate(v.bitrate));
  if (v?.jitterBufferEmittedCount) {
    chips.push(`buffer ${Math.round((v.jitterBufferDelay / v.jitterBufferEmittedCount) * 1000)} ms`);
  }
  statsLine.replaceChildren(...chips.map((text) => h("span.chip", {}, text)));
}

/** Recover when the studio is live but nothing arrives (a new feed in another codec, a dead path). */
function watchdog() {
  if (player.state !== States.CONNECTED || !studio?.live || liveSince === null) return;
  const liveFor = (performance.now() - liveSince) / 1000;
  const silentFor = (performance.now() - lastFrameAt) / 1000;
  const ourCodec = stats?.video?.codec;
  const theirCodec = studio.codecs?.video;
  if (ourCodec && theirCodec && ourCodec.toLowerCase() !== theirCodec.toLowerCase()) {
    restart("the studio changed codec");
  } else if (liveFor > STALL_SECONDS && silentFor > STALL_SECONDS) {
    restart("no picture");
  }
}

function restart(reason) {
  lastFrameAt = performance.now();
  lastFrames = 0;
  firstFrame = false;
  stats = null;
  player.renegotiate(reason);
}

player.addEventListener("connected", () => {
  lastFrameAt = performance.now();
  lastFrames = 0;
  firstFrame = false;
});

setInterval(sampleStats, STATS_INTERVAL);

// ------------------------------------------------------------------ studio and audience

function renderStudio() {
  if (!studio) return;
  document.title = `${studio.name} · Meridian`;
  setText(document.getElementById("studio-flag"), flag(studio.country));
  setText(document.getElementById("studio-name"), studio.name);
  setText(
    document.getElementById("studio-place"),
    placeOf(studio),
  );
  const badge = document.getElementById("studio-badge");
  if (badge.dataset.live !== String(studio.live)) {
    badge.dataset.live = String(studio.live);
    badge.replaceChildren(liveBadge(studio.live));
  }
}

function renderAudience() {
  const entry = audienceByStudio(audience).get(studioId);
  const viewers = entry ? entry.viewers : (studio?.viewers ?? 0);
  const countries = entry ? knownCountries(entry.countries).length : 0;
  const from = countries ? ` from ${countries} ${countries === 1 ? "country" : "countries"}` : "";
  const label = watchingLabel(viewers, from);
  label.id = "watching";
  audienceLabel.replaceChildren(label);
  audienceLabel.dataset.count = String(viewers);
  const header = document.getElementById("header-stat");
  const total = audience ? audience.viewers : studios.reduce((n, s) => n + s.viewers, 0);
  header.replaceChildren(watchingLabel(total, ""));
  header.dataset.count = String(total);
}

let programmeSignature = "";

function renderProgramme() {
  const list = document.getElementById("programme");
  const counts = audienceByStudio(audience);
  const signature = JSON.stringify(
    studios.map((s) => [s.id, s.city, s.country, s.live, counts.get(s.id)?.viewers ?? s.viewers]),
  );
  if (signature === programmeSignature) return; // keep focus and hover where they are
  programmeSignature = signature;
  list.replaceChildren(
    ...studios.map((s) =>
      h(
        "li",
        {},
        h(
          "a",
          {
            href: `/watch/${encodeURIComponent(s.id)}`,
            "aria-current": s.id === studioId ? "page" : null,
          },
          h("span.flag", {}, flag(s.country)),
          h(
            "span.side-text",
            {},
            h("b", {}, s.city || s.name),
            h("span", {}, `${count(counts.get(s.id)?.viewers ?? s.viewers)} watching`),
          ),
          liveBadge(s.live),
        ),
      ),
    ),
  );
}

subscribeStudios((list) => {
  if (!list) return;
  studios = list;
  const wasLive = studio?.live ?? false;
  studio = list.find((s) => s.id === studioId) ?? null;
  if (studio?.live && !wasLive) {
    liveSince = performance.now();
    player.retryNow(); // no need to sit out Retry-After once the programme says it is live
  } else if (!studio?.live) {
    liveSince = null;
  }
  renderStudio();
  renderAudience();
  renderProgramme();
  renderState();
});

subscribeAudience((update) => {
  audience = update;
  renderAudience();
  renderProgramme();
});

// ------------------------------------------------------------------ go

markNavigation();
renderUnmute();
renderState();
player.start().catch(() => {}); // failures show through statechange
window.addEventListener("pagehide", () => player.stop({ keepalive: true }));
