// meridian-client.js: WHIP (RFC 9725) and WHEP clients for the browser, in one ES module.
//
// No dependencies and no build step: any page can import it, from Meridian or another site.
//
//   import { WHEPClient } from "https://meridian.example/static/meridian-client.js";
//   const player = new WHEPClient("https://meridian.example/whep/berlin", { video: element });
//   player.addEventListener("statechange", () => console.log(player.state));
//   await player.start();          // resolves once media flows; retries while the studio is offline
//   await player.stop();           // DELETE on the session URL
//
// What it does, per the RFC and the WHEP draft:
// - POST the SDP offer (application/sdp, bearer token for WHIP); 201 gives the answer, the
//   session URL (Location, resolved against the endpoint) and its ETag; `Link: rel="ice-server"`
//   headers add STUN/TURN servers.
// - Trickle ICE: candidates gathered after the offer are PATCHed to the session URL as
//   application/trickle-ice-sdpfrag with If-Match: <ETag>, batched, one request in flight;
//   a server that answers 405/501 is not sent more.
// - ICE restart when the connection is lost: PATCH with If-Match: "*", the new ufrag/pwd and
//   candidates; 200 with the server's fragment and a new ETag. When the server refuses (422,
//   405, 501...) or the restart does not reconnect, the client ends the session (DELETE) and
//   sets up a fresh one.
// - 409 (studio offline) and 503 are retried after Retry-After seconds; network failures and
//   other 5xx with exponential backoff and jitter. 401/403 (bad token), 404 and 4xx refusals
//   such as 422 (a codec the server cannot relay) stop the client with a MeridianError that
//   carries the server's RFC 9457 problem detail.
// - DELETE when stopped; `stop({ keepalive: true })` still reaches the server from `pagehide`.

export const SDP = "application/sdp";
export const SDPFRAG = "application/trickle-ice-sdpfrag";

/** An error from the server or the network, with what the page needs to explain it. */
export class MeridianError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, problem?: object|null, retryAfter?: number|null,
   *          retryable?: boolean, code?: string}} [details]
   */
  constructor(message, details = {}) {
    super(message);
    this.name = "MeridianError";
    this.status = details.status ?? 0;
    this.problem = details.problem ?? null;
    this.retryAfter = details.retryAfter ?? null;
    this.retryable = details.retryable ?? false;
    this.code = details.code ?? (this.status ? `http-${this.status}` : "network");
  }

  /** 409: the studio is not live yet (WHEP); retried after Retry-After. */
  get offline() {
    return this.status === 409;
  }

  /** 401/403: the bearer token is missing or wrong. */
  get unauthorized() {
    return this.status === 401 || this.status === 403;
  }
}

/** Client states, in the order a session usually goes through them. */
export const States = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting", // offer sent, waiting for ICE and DTLS
  OFFLINE: "offline", // 409: the studio is not live; retrying as Retry-After says
  RETRYING: "retrying", // a network or server failure; retrying with backoff
  CONNECTED: "connected",
  RECONNECTING: "reconnecting", // the connection was lost; ICE restart or a fresh session
  FAILED: "failed", // a refusal that retrying cannot fix (bad token, unknown studio, codec)
  CLOSED: "closed",
});

const DEFAULTS = {
  token: null,
  iceServers: [],
  trickle: true,
  iceRestart: true,
  connectTimeout: 15000, // ms from the offer to a connected peer connection
  disconnectGrace: 2500, // ms a "disconnected" connection may take to come back by itself
  restartTimeout: 5000, // ms an ICE restart may take to reconnect
  minRetryDelay: 1000,
  maxRetryDelay: 30000,
  fetch: null,
};

/** Parse Retry-After (delay-seconds or an HTTP date) into seconds, or null. */
export function parseRetryAfter(value, now = Date.now()) {
  if (!value) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, Math.round((date - now) / 1000));
}

/** ICE servers from `Link: <turn:...>; rel="ice-server"; username=...; credential=...`. */
export function parseIceServerLinks(header) {
  if (!header) return [];
  const servers = [];
  for (const link of header.split(/,(?=\s*<)/)) {
    const match = /^\s*<([^>]+)>(.*)$/.exec(link);
    if (!match) continue;
    const params = {};
    for (const part of match[2].split(";")) {
      const eq = part.indexOf("=");
      if (eq < 0) continue;
      const key = part.slice(0, eq).trim().toLowerCase();
      params[key] = part.slice(eq + 1).trim().replace(/^"(.*)"$/, "$1");
    }
    if (params.rel !== "ice-server") continue;
    const server = { urls: match[1] };
    if (params.username !== undefined) server.username = params.username;
    if (params.credential !== undefined) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

/** ice-ufrag and ice-pwd of an SDP (session level or the first m-line's). */
export function iceCredentials(sdp) {
  const ufrag = /^a=ice-ufrag:(.+)$/m.exec(sdp);
  const pwd = /^a=ice-pwd:(.+)$/m.exec(sdp);
  return { ufrag: ufrag ? ufrag[1].trim() : "", pwd: pwd ? pwd[1].trim() : "" };
}

/**
 * An RFC 8840 SDP fragment: credentials, then per m-line its mid and candidates.
 * `candidates` are RTCIceCandidate-like objects ({candidate, sdpMid, sdpMLineIndex}).
 */
export function buildSdpFragment(localSdp, candidates, { endOfCandidates = false } = {}) {
  const { ufrag, pwd } = iceCredentials(localSdp);
  const sections = localSdp.split(/\r?\n(?=m=)/).slice(1);
  const mids = sections.map((section) => {
    const kind = /^m=(\S+)/.exec(section)?.[1] ?? "application";
    const mid = /^a=mid:(.+)$/m.exec(section)?.[1]?.trim() ?? null;
    return { kind, mid };
  });
  const group = /^a=group:BUNDLE .+$/m.exec(localSdp)?.[0];
  const lines = [];
  if (group) lines.push(group.trim());
  lines.push(`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`);
  // With max-bundle every candidate belongs to the first m-line; keep others where they say.
  const byMid = new Map();
  for (const candidate of candidates) {
    let mid = candidate.sdpMid;
    if (mid == null && candidate.sdpMLineIndex != null) mid = mids[candidate.sdpMLineIndex]?.mid;
    mid = mid ?? mids[0]?.mid ?? "0";
    if (!byMid.has(mid)) byMid.set(mid, []);
    byMid.get(mid).push(candidate.candidate);
  }
  if (byMid.size === 0 && mids.length) byMid.set(mids[0].mid, []);
  for (const [mid, lines_] of byMid) {
    const kind = mids.find((m) => m.mid === mid)?.kind ?? "audio";
    lines.push(`m=${kind} 9 UDP/TLS/RTP/SAVPF 0`, `a=mid:${mid}`);
    for (const candidate of lines_) lines.push(`a=${candidate}`);
    if (endOfCandidates) lines.push("a=end-of-candidates");
  }
  return `${lines.join("\r\n")}\r\n`;
}

/** Parse a server's restart fragment: its credentials and candidate lines. */
export function parseSdpFragment(text) {
  const { ufrag, pwd } = iceCredentials(text);
  const candidates = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("a=candidate:")) candidates.push(line.trim());
  }
  return { ufrag, pwd, candidates };
}

/** Replace the ICE credentials (and candidates, if any came) of a remote answer. */
function restartedAnswer(previous, fragment) {
  let sdp = previous
    .replace(/^a=ice-ufrag:.*$/gm, `a=ice-ufrag:${fragment.ufrag}`)
    .replace(/^a=ice-pwd:.*$/gm, `a=ice-pwd:${fragment.pwd}`);
  if (fragment.candidates.length) {
    sdp = sdp.replace(/^a=(candidate:.*|end-of-candidates)\r?\n/gm, "");
    const [head, ...sections] = sdp.split(/\r\n(?=m=)/);
    sections[0] = `${sections[0].replace(/\r\n$/, "")}\r\n${fragment.candidates.join("\r\n")}\r\n`;
    sdp = [head, ...sections].join("\r\n");
  }
  return sdp;
}

async function readProblem(response) {
  const type = response.headers.get("Content-Type") ?? "";
  try {
    if (type.includes("json")) return await response.json();
    const text = await response.text();
    return text ? { detail: text.slice(0, 500) } : null;
  } catch {
    return null;
  }
}

function describe(status, problem, what) {
  const detail = problem?.detail || problem?.title;
  if (detail) return `${detail} (HTTP ${status})`;
  return `${what} was refused with HTTP ${status}`;
}

/**
 * What WHIP and WHEP share: the session resource, trickle, restarts, retries.
 * Subclasses add their transceivers in `prepare(pc)`.
 *
 * Events: "statechange" (detail: {state, retryIn, error, reason}), "connected",
 * "error" (detail: {error}), "track" (WHEP; detail: {track, streams}).
 */
export class WebRTCSessionClient extends EventTarget {
  #state = States.IDLE;
  #pc = null;
  #resource = null; // {url, etag}
  #answer = "";
  #pending = []; // candidates not yet PATCHed
  #gathered = false;
  #trickling = null; // the PATCH in flight
  #trickleHeld = false;
  #trickleOff = false;
  #stopped = true;
  #generation = 0; // bumped by start() and stop(): an older loop sees it and exits
  #establishing = false; // between the offer and the first "connected"
  #wake = null; // resolves the current backoff sleep
  #lost = null; // {promise, resolve} for the current connection
  #started = null;
  #protocol;

  /**
   * @param {string|URL} endpoint the WHIP or WHEP endpoint URL
   * @param {object} [options] see DEFAULTS; subclasses add their own
   * @param {"whip"|"whep"} protocol
   */
  constructor(endpoint, options, protocol) {
    super();
    this.endpoint = new URL(endpoint, globalThis.location?.href).href;
    this.options = { ...DEFAULTS, ...options };
    this.#protocol = protocol;
    this.retries = 0; // fresh sessions set up after the first
    this.restarts = 0; // successful ICE restarts
  }

  get state() {
    return this.#state;
  }

  /** The current RTCPeerConnection (replaced on each fresh session), or null. */
  get peerConnection() {
    return this.#pc;
  }

  /** The session URL the server gave (Location), or null between sessions. */
  get resourceUrl() {
    return this.#resource?.url ?? null;
  }

  get etag() {
    return this.#resource?.etag ?? null;
  }

  /**
   * Start, and keep the session up until stop(). Resolves when media can flow for the first
   * time; rejects with a MeridianError when the server refuses in a way retrying cannot fix.
   */
  start() {
    if (!this.#stopped) return this.#started.promise;
    this.#stopped = false;
    this.#started = deferred();
    this.#run(++this.#generation);
    return this.#started.promise;
  }

  /** End the session: DELETE on its URL, close the peer connection. */
  async stop({ keepalive = false } = {}) {
    this.#stopped = true;
    this.#generation += 1;
    this.#wake?.();
    this.#lost?.resolve({ reason: "stopped" });
    await this.#endSession({ keepalive });
    this.#setState(States.CLOSED);
    this.#started?.reject(new MeridianError("stopped", { code: "stopped" }));
  }

  /** While waiting to retry (offline, backoff), try again now (with a little jitter). */
  retryNow() {
    if (!this.#wake) return;
    const wake = this.#wake;
    setTimeout(wake, Math.random() * 500);
  }

  /** Drop the current session and set up a fresh one (e.g. the studio changed codec). */
  renegotiate(reason = "renegotiate") {
    this.#lost?.resolve({ reason, restartable: false });
  }

  /**
   * Repair the connection now, as on a network change: an ICE restart (PATCH, If-Match: "*")
   * where the server supports it, a fresh session where it does not.
   */
  reconnect(reason = "reconnect") {
    this.#lost?.resolve({ reason, restartable: true });
  }

  async getStats() {
    return this.#pc ? this.#pc.getStats() : new Map();
  }

  /** Subclasses: add transceivers to `pc`. */
  prepare(_pc) {}

  /** Subclasses: the session is up (e.g. apply sender parameters). */
  async connected(_pc) {}

  // ------------------------------------------------------------------ the loop

  async #run(generation) {
    const current = () => generation === this.#generation && !this.#stopped;
    let failures = 0;
    while (current()) {
      try {
        await this.#connectOnce();
        failures = 0;
        this.#started.resolve();
        this.dispatchEvent(new Event("connected"));
        await this.#holdConnection();
        if (!current()) return;
        this.retries += 1;
        await this.#endSession();
      } catch (error) {
        if (!current()) return;
        await this.#endSession();
        if (!current()) return;
        const failure =
          error instanceof MeridianError
            ? error
            : new MeridianError(String(error?.message ?? error), { retryable: true });
        if (!failure.retryable) {
          this.#stopped = true;
          this.#setState(States.FAILED, { error: failure });
          this.dispatchEvent(new CustomEvent("error", { detail: { error: failure } }));
          this.#started.reject(failure);
          return;
        }
        const delay = this.#retryDelay(failure, failures++);
        this.#setState(failure.offline ? States.OFFLINE : States.RETRYING, {
          error: failure,
          retryIn: delay,
        });
        await this.#sleep(delay);
      }
    }
  }

  #retryDelay(error, failures) {
    const { minRetryDelay, maxRetryDelay } = this.options;
    if (error.retryAfter != null) {
      // As the server says, with up to 20% jitter so that viewers do not return in lockstep.
      const base = Math.min(Math.max(error.retryAfter * 1000, minRetryDelay), maxRetryDelay * 2);
      return Math.round(base * (1 + Math.random() * 0.2));
    }
    const ceiling = Math.min(maxRetryDelay, minRetryDelay * 2 ** failures);
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.#wake === done) self.#wake = null;
        resolve();
      }
      this.#wake = done;
    });
  }

  // ------------------------------------------------------------------ one session

  async #connectOnce() {
    this.#setState(this.retries ? States.RECONNECTING : States.CONNECTING);
    const pc = new RTCPeerConnection({
      iceServers: this.options.iceServers,
      bundlePolicy: "max-bundle",
    });
    this.#pc = pc;
    this.#pending = [];
    this.#gathered = false;
    this.#trickleHeld = false;
    this.#trickleOff = !this.options.trickle;
    this.#lost = deferred();
    this.#establishing = true;
    pc.addEventListener("icecandidate", (event) => this.#onCandidate(pc, event.candidate));
    pc.addEventListener("connectionstatechange", () => this.#onConnectionState(pc));
    this.prepare(pc);

    await pc.setLocalDescription(await pc.createOffer());
    if (!this.options.trickle) await gatheringComplete(pc, 2000);
    const response = await this.#post(pc.localDescription.sdp);
    if (this.#pc !== pc) throw new MeridianError("stopped", { code: "stopped", retryable: true });
    const linked = parseIceServerLinks(response.headers.get("Link"));
    if (linked.length) {
      pc.setConfiguration({ ...pc.getConfiguration(), iceServers: [...this.options.iceServers, ...linked] });
    }
    this.#answer = await response.text();
    await pc.setRemoteDescription({ type: "answer", sdp: this.#answer });
    this.#flushCandidates();
    this.#watchDtls(pc);
    await this.#connectedWithin(pc, this.options.connectTimeout);
    this.#establishing = false;
    await this.connected(pc);
    this.#setState(States.CONNECTED);
  }

  async #post(offer) {
    const headers = { "Content-Type": SDP };
    if (this.options.token) headers.Authorization = `Bearer ${this.options.token}`;
    let response;
    try {
      response = await this.#fetch(this.endpoint, { method: "POST", headers, body: offer });
    } catch (error) {
      throw new MeridianError(`cannot reach ${this.endpoint}: ${error.message}`, {
        retryable: true,
      });
    }
    if (response.status === 201) {
      const location = response.headers.get("Location");
      if (!location) throw new MeridianError("the 201 answer has no Location", { retryable: true });
      this.#resource = {
        url: new URL(location, response.url || this.endpoint).href,
        etag: response.headers.get("ETag"),
      };
      return response;
    }
    const problem = await readProblem(response);
    const status = response.status;
    const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
    const retryable = status === 409 || status === 429 || status >= 500;
    const what = this.#protocol === "whip" ? "publishing" : "watching";
    throw new MeridianError(describe(status, problem, what), {
      status,
      problem,
      retryAfter,
      retryable,
      code: problem?.type ? String(problem.type).split("/").pop() : `http-${status}`,
    });
  }

  #fetch(url, init) {
    const f = this.options.fetch ?? globalThis.fetch.bind(globalThis);
    return f(url, init);
  }

  #connectedWithin(pc, timeout) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (pc.connectionState === "connected") finish(null);
        else if (pc.connectionState === "failed" || pc.connectionState === "closed")
          finish(new MeridianError(`the connection ${pc.connectionState}`, { retryable: true }));
      };
      const timer = setTimeout(
        () => finish(new MeridianError("ICE and DTLS did not connect in time", { retryable: true })),
        timeout,
      );
      this.#lost.promise.then((loss) =>
        finish(new MeridianError(`the connection was lost (${loss.reason})`, { retryable: true })),
      );
      function finish(error) {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        if (error) reject(error);
        else resolve();
      }
      pc.addEventListener("connectionstatechange", check);
      check();
    });
  }

  /** Wait until the connection is lost; repair it by ICE restart where possible. */
  async #holdConnection() {
    for (;;) {
      const loss = await this.#lost.promise;
      if (this.#stopped) return;
      this.#setState(States.RECONNECTING, { reason: loss.reason });
      if (!(loss.restartable && this.options.iceRestart)) return;
      this.#lost = deferred();
      if (!(await this.#restartIce())) return;
      this.restarts += 1;
      this.#setState(States.CONNECTED);
    }
  }

  #onConnectionState(pc) {
    if (pc !== this.#pc || this.#establishing) return;
    const state = pc.connectionState;
    if (state === "failed" || state === "closed") {
      this.#lost?.resolve({ reason: `connection ${state}`, restartable: state === "failed" });
    } else if (state === "disconnected") {
      setTimeout(() => {
        if (pc === this.#pc && pc.connectionState === "disconnected") {
          this.#lost?.resolve({ reason: "connection disconnected", restartable: true });
        }
      }, this.options.disconnectGrace);
    }
  }

  /** The server closing DTLS (close_notify) ends the session on its side: start afresh. */
  #watchDtls(pc) {
    const transport = pc.getTransceivers().find((t) => t.sender.transport)?.sender.transport;
    if (!transport) return;
    transport.addEventListener("statechange", () => {
      if (pc !== this.#pc) return;
      if (transport.state === "closed" || transport.state === "failed") {
        this.#lost?.resolve({ reason: `DTLS ${transport.state}`, restartable: false });
      }
    });
  }

  async #restartIce() {
    const pc = this.#pc;
    if (!pc || !this.#resource) return false;
    this.#trickleHeld = true;
    try {
      await this.#trickling;
      pc.restartIce();
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      this.#pending = [];
      this.#gathered = false;
      await gatheringComplete(pc, 1000);
      const body = buildSdpFragment(pc.localDescription.sdp, this.#pending.splice(0), {
        endOfCandidates: this.#gathered,
      });
      const response = await this.#fetch(this.#resource.url, {
        method: "PATCH",
        headers: { ...this.#authHeaders(), "Content-Type": SDPFRAG, "If-Match": "*" },
        body,
      });
      if (response.status !== 200) return false;
      const fragment = parseSdpFragment(await response.text());
      if (!fragment.ufrag || !fragment.pwd) return false;
      this.#resource.etag = response.headers.get("ETag") ?? this.#resource.etag;
      this.#answer = restartedAnswer(this.#answer, fragment);
      await pc.setRemoteDescription({ type: "answer", sdp: this.#answer });
      this.#trickleHeld = false;
      this.#flushCandidates();
      await this.#connectedWithin(pc, this.options.restartTimeout);
      return true;
    } catch {
      return false;
    } finally {
      this.#trickleHeld = false;
    }
  }

  // ------------------------------------------------------------------ trickle ICE

  #onCandidate(pc, candidate) {
    if (pc !== this.#pc) return;
    if (candidate && candidate.candidate) this.#pending.push(candidate);
    else if (!candidate) this.#gathered = true;
    this.#flushCandidates();
  }

  #flushCandidates() {
    if (this.#trickling || this.#trickleHeld || this.#trickleOff || !this.#resource) return;
    if (!this.#pending.length && !this.#gathered) return;
    const pc = this.#pc;
    if (!pc?.localDescription || !pc.remoteDescription) return;
    const candidates = this.#pending.splice(0);
    const end = this.#gathered;
    if (end) this.#gathered = false; // say end-of-candidates once
    const body = buildSdpFragment(pc.localDescription.sdp, candidates, { endOfCandidates: end });
    const resource = this.#resource;
    this.#trickling = this.#fetch(resource.url, {
      method: "PATCH",
      headers: { ...this.#authHeaders(), "Content-Type": SDPFRAG, "If-Match": resource.etag ?? "*" },
      body,
    })
      .then((response) => {
        if (response.status === 405 || response.status === 501) this.#trickleOff = true;
      })
      .catch(() => {})
      .finally(() => {
        this.#trickling = null;
        if (this.#pc === pc) this.#flushCandidates();
      });
  }

  #authHeaders() {
    return this.options.token ? { Authorization: `Bearer ${this.options.token}` } : {};
  }

  // ------------------------------------------------------------------ teardown

  async #endSession({ keepalive = false } = {}) {
    const pc = this.#pc;
    const resource = this.#resource;
    this.#pc = null;
    this.#resource = null;
    this.#trickling = null;
    this.#establishing = false;
    // DELETE before closing, so that the server ends the session as deleted rather than
    // seeing the peer connection go first; a page going away does not wait for the answer.
    if (resource) {
      const deleting = this.#fetch(resource.url, {
        method: "DELETE",
        headers: this.#authHeaders(),
        keepalive,
      }).catch(() => {
        // The server ends sessions it no longer hears from by itself.
      });
      if (!keepalive) await Promise.race([deleting, delay(2000)]);
    }
    pc?.close();
  }

  #setState(state, detail = {}) {
    this.#state = state;
    this.dispatchEvent(new CustomEvent("statechange", { detail: { state, ...detail } }));
  }
}

/**
 * A WHIP publisher: sends a MediaStream's tracks.
 *
 * Options (besides the shared ones): `stream` (MediaStream, required), `token` (the studio's
 * bearer token), `videoCodec` ("H264", "VP8", ...: the codec to send), `maxBitrate` (bits/s
 * cap for video), `degradationPreference` (default "maintain-resolution").
 */
export class WHIPClient extends WebRTCSessionClient {
  constructor(endpoint, options = {}) {
    super(endpoint, { degradationPreference: "maintain-resolution", ...options }, "whip");
    if (!options.stream) throw new TypeError("WHIPClient needs options.stream");
  }

  prepare(pc) {
    const { stream, videoCodec, maxBitrate } = this.options;
    for (const track of stream.getTracks()) {
      const init = { direction: "sendonly", streams: [stream] };
      if (track.kind === "video" && maxBitrate) init.sendEncodings = [{ maxBitrate }];
      const transceiver = pc.addTransceiver(track, init);
      if (track.kind === "video" && videoCodec) preferCodec(transceiver, "video", videoCodec);
    }
  }

  async connected(pc) {
    await this.setMaxBitrate(this.options.maxBitrate ?? null, pc);
  }

  /** Change the video bitrate cap while live (bits/s; null for none). */
  async setMaxBitrate(maxBitrate, pc = this.peerConnection) {
    this.options.maxBitrate = maxBitrate;
    const sender = pc?.getSenders().find((s) => s.track?.kind === "video");
    if (!sender) return;
    const parameters = sender.getParameters();
    if (!parameters.encodings?.length) parameters.encodings = [{}];
    for (const encoding of parameters.encodings) {
      if (maxBitrate) encoding.maxBitrate = maxBitrate;
      else delete encoding.maxBitrate;
    }
    if (this.options.degradationPreference) {
      parameters.degradationPreference = this.options.degradationPreference;
    }
    try {
      await sender.setParameters(parameters);
    } catch {
      // Browsers without degradationPreference: the cap alone.
      delete parameters.degradationPreference;
      await sender.setParameters(parameters).catch(() => {});
    }
  }

  /** Swap a track while live (another camera or microphone), without renegotiating. */
  async replaceTrack(kind, track) {
    const sender = this.peerConnection?.getSenders().find((s) => s.track?.kind === kind);
    if (sender) await sender.replaceTrack(track);
  }
}

/**
 * A WHEP player: receives a studio's audio and video.
 *
 * Options (besides the shared ones): `video` (an HTMLMediaElement to play into), `kinds`
 * (default ["audio", "video"]), `videoCodecs` (mime types to prefer, e.g. ["video/H264"]).
 */
export class WHEPClient extends WebRTCSessionClient {
  constructor(endpoint, options = {}) {
    super(endpoint, { kinds: ["audio", "video"], ...options }, "whep");
    this.stream = new MediaStream();
  }

  prepare(pc) {
    this.stream = new MediaStream();
    for (const kind of this.options.kinds) {
      const transceiver = pc.addTransceiver(kind, { direction: "recvonly" });
      for (const mime of kind === "video" ? (this.options.videoCodecs ?? []) : []) {
        preferCodec(transceiver, "video", mime.replace(/^video\//i, ""));
      }
    }
    pc.addEventListener("track", (event) => {
      this.stream.addTrack(event.track);
      const element = this.options.video;
      if (element && element.srcObject !== this.stream) element.srcObject = this.stream;
      this.dispatchEvent(
        new CustomEvent("track", { detail: { track: event.track, streams: event.streams } }),
      );
    });
  }
}

/** Put `name`'s variants first (H.264: packetization-mode 1, constrained baseline first). */
export function preferCodec(transceiver, kind, name) {
  const capabilities = RTCRtpReceiver.getCapabilities?.(kind) ?? RTCRtpSender.getCapabilities(kind);
  if (!capabilities || typeof transceiver.setCodecPreferences !== "function") return;
  const wanted = `${kind}/${name}`.toLowerCase();
  const rank = (codec) => {
    const fmtp = codec.sdpFmtpLine ?? "";
    let score = 0;
    if (/packetization-mode=1/.test(fmtp)) score -= 2;
    if (/profile-level-id=42e0/i.test(fmtp)) score -= 1;
    return score;
  };
  const chosen = capabilities.codecs
    .filter((c) => c.mimeType.toLowerCase() === wanted)
    .sort((a, b) => rank(a) - rank(b));
  if (!chosen.length) throw new MeridianError(`this browser cannot send or receive ${name}`);
  const rest = capabilities.codecs.filter((c) => c.mimeType.toLowerCase() !== wanted);
  // Only the chosen codec, and the repair formats that go with it: the relay takes it or
  // answers 422 naming the codec, never another one in its place.
  const repair = rest.filter((c) => /\/(rtx|red|ulpfec)$/i.test(c.mimeType));
  transceiver.setCodecPreferences([...chosen, ...repair]);
}

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // a start() nobody awaits must not report an unhandled rejection
  return { promise, resolve, reject };
}

function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function gatheringComplete(pc, timeout) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeout);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}
