// tether dashboard: the customer's browser as a receiver.
//
// Plain ES module, no build step. Talks to the server it was served from,
// signed in with an account (session cookie, see session.js) or a key:
//   GET  /v1/me, /v1/devices, /v1/channels      (Authorization: Bearer <key>, or the cookie)
//   GET  /v1/descriptions, /v1/series, /v1/export (readings.js: charts, ranges, export)
//   POST /v1/claim, /v1/devices/{id}/commands
//   WS   /v1/receiver  (key in the subprotocol "tether-key.<key>"), JSON frames
//        subscribe with a resume offset; ping/pong to notice dead connections.

import { ACCOUNT_MESSAGES, accountMessage, currentSession, roleText, signIn as passwordSignIn, signOut as endSession } from "./session.js";
import { ReadingsView, durationText, signalText, valuesText } from "./readings.js";

const KEY_STORAGE = "tether.receiverKey";
/** Events replayed when a channel is opened. */
const HISTORY = 200;
/** Rows kept in the table. */
const MAX_ROWS = 500;
const REFRESH_MS = 5000;
const PING_MS = 15000;
const PONG_TIMEOUT_MS = 5000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8000;

const $ = (id) => document.getElementById(id);

const state = {
  key: null,
  /** The signed-in account's session (GET /v1/session), when not a key. */
  session: null,
  access: null,
  devices: [],
  channels: [],
  channel: null,
  refreshTimer: null,
};

// ---------------------------------------------------------------- messages

const MESSAGES = {
  unreachable: "Cannot reach the tether server. Check your network connection; the page keeps retrying.",
  wrongKey: "Wrong receiver key: the server does not accept this key (mistyped, or revoked). Check it and sign in again.",
  badClaimCode: "That claim code is not valid: it is mistyped or was already used. Check the code on the device's label.",
  expiredClaimCode: "That claim code has expired. Ask the seller or installer of the device for a new claim code.",
};

/** Why the server refused us now: the key, or the session. */
function refused() {
  return state.session ? ACCOUNT_MESSAGES.session_ended : MESSAGES.wrongKey;
}

/**
 * The text for an API error: what happened and what to do next. Exported
 * for the browser test that holds every message to that.
 */
export function describeError(error, context = {}) {
  if (error.kind === "unreachable") return MESSAGES.unreachable;
  const device = context.device ? `Device ${context.device}` : "The device";
  switch (error.code) {
    case "unauthorized": return refused();
    case "unknown_claim_code": return MESSAGES.badClaimCode;
    case "claim_code_expired": return MESSAGES.expiredClaimCode;
    case "device_offline":
      return `${device} is offline: the command was not delivered. Commands are not queued; try again when it is online.`;
    case "command_timeout":
      return `${device} did not answer in time; it may or may not have carried out the command. Check its readings, then send it again if needed.`;
    case "unknown_device":
      return `${device} is not one of your devices. Check the device list, or claim the device with the code on its label.`;
    case "forbidden":
      return /reload|sign in/i.test(error.message)
        ? `Not allowed: ${error.message}.`
        : `Not allowed: ${error.message}. Ask the account owner (or whoever gave you the key) if you need to do this.`;
    case "rate_limited": return "Too many requests; wait a moment and try again.";
    case "internal": return "The server failed to do this; try again in a minute.";
    default:
      return `${error.message || `The request failed (${error.code})`}. Reload the page and try again.`;
  }
}

class ApiError extends Error {
  constructor(kind, code, message, status) {
    super(message);
    this.kind = kind;
    this.code = code;
    this.status = status;
  }
}

async function api(method, path, body, key = state.key) {
  // A key, or else the session cookie (sent by the browser) with the CSRF
  // token on requests that change something.
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  if (!key && state.session && method !== "GET") headers["X-CSRF-Token"] = state.session.csrf_token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError("unreachable", "unreachable", MESSAGES.unreachable, 0);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = data?.error?.code ?? `http_${response.status}`;
    throw new ApiError("http", code, data?.error?.message ?? response.statusText, response.status);
  }
  return data;
}

/** An authenticated GET whose response the caller reads (readings.js). */
function request(path) {
  // A key, or else the session cookie (a GET needs no CSRF token).
  const headers = state.key ? { Authorization: `Bearer ${state.key}` } : {};
  return fetch(path, { headers, cache: "no-store" });
}

function setMessage(element, text, kind) {
  element.textContent = text;
  element.classList.toggle("error", kind === "error");
  element.classList.toggle("ok", kind === "ok");
}

function showBanner(text) {
  const banner = $("banner");
  if (text) {
    if (banner.textContent !== text) banner.textContent = text;
    banner.hidden = false;
  } else {
    banner.hidden = true;
    banner.textContent = "";
  }
}

// ------------------------------------------------------------- formatting

function timeText(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function agoText(ms) {
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return new Date(ms).toLocaleDateString();
}

function timeElement(ms, text) {
  const element = document.createElement("time");
  element.dateTime = new Date(ms).toISOString();
  element.title = new Date(ms).toLocaleString();
  element.textContent = text;
  return element;
}

function payloadText(payload) {
  const compact = JSON.stringify(payload);
  return compact.length <= 60 ? compact : JSON.stringify(payload, null, 2);
}

function cell(row, content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  row.append(td);
  return td;
}

// ----------------------------------------------------------- sign in/out

function showSignIn(message, kind) {
  $("session").hidden = true;
  $("app-view").hidden = true;
  $("sign-in-view").hidden = false;
  const withKey = $("key-sign-in").open;
  setMessage($(withKey ? "sign-in-message" : "password-message"), message ?? "", kind);
  setMessage($(withKey ? "password-message" : "sign-in-message"), "");
  $(withKey ? "key" : "email").focus();
}

async function signInWithPassword(event) {
  event.preventDefault();
  const message = $("password-message");
  const email = $("email").value.trim();
  const password = $("password").value;
  $("email").removeAttribute("aria-invalid");
  $("password").removeAttribute("aria-invalid");
  if (!email) {
    setMessage(message, "Enter your email address.", "error");
    $("email").setAttribute("aria-invalid", "true");
    return;
  }
  if (!password) {
    setMessage(message, "Enter your password.", "error");
    $("password").setAttribute("aria-invalid", "true");
    return;
  }
  $("sign-in-password").disabled = true;
  setMessage(message, "Signing in…");
  try {
    const session = await passwordSignIn(email, password);
    $("password").value = "";
    setMessage(message, "");
    enterSession(session);
  } catch (error) {
    if (error.code === "wrong_password") $("password").setAttribute("aria-invalid", "true");
    if (error.code === "invalid_field") $("email").setAttribute("aria-invalid", "true");
    setMessage(message, accountMessage(error), "error");
  } finally {
    $("sign-in-password").disabled = false;
  }
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  const message = $("sign-in-message");
  if (!key) {
    setMessage(message, "Enter your receiver key.", "error");
    $("key").setAttribute("aria-invalid", "true");
    return;
  }
  $("sign-in").disabled = true;
  setMessage(message, "Signing in…");
  try {
    const access = await api("GET", "/v1/me", undefined, key);
    localStorage.setItem(KEY_STORAGE, key);
    $("key").value = "";
    $("key").removeAttribute("aria-invalid");
    setMessage(message, "");
    enterApp(key, access);
  } catch (error) {
    if (error.code === "unauthorized") $("key").setAttribute("aria-invalid", "true");
    setMessage(message, describeError(error), "error");
  } finally {
    $("sign-in").disabled = false;
  }
}

function signOut(message, kind) {
  localStorage.removeItem(KEY_STORAGE);
  closeChannel();
  clearTimeout(state.refreshTimer);
  const session = state.session;
  // Ends the session on the server too (if it still exists).
  if (session) endSession(session);
  state.session = null;
  state.key = null;
  state.access = null;
  state.devices = [];
  state.channels = [];
  $("devices").tBodies[0].replaceChildren();
  $("channels").replaceChildren();
  showBanner("");
  setMessage($("claim-message"), "");
  setMessage($("command-message"), "");
  const done = session ? "Signed out." : "Signed out. This browser no longer keeps your key.";
  showSignIn(message ?? done, kind ?? "ok");
}

/** The access a signed-in member has (what /v1/me says for a key). */
function sessionAccess(session) {
  return { tenant_id: session.tenant_id, can_command: session.can_command, channels: null };
}

function enterSession(session) {
  state.session = session;
  enterApp(null, sessionAccess(session));
}

function enterApp(key, access) {
  state.key = key;
  if (key) state.session = null;
  state.access = access;
  $("sign-in-view").hidden = true;
  $("app-view").hidden = false;
  $("session").hidden = false;
  applyAccess();
  const fromHash = channelFromHash();
  // The channel list (fetched by the first refresh) tells where history starts.
  refresh().then(() => {
    if (fromHash && signedIn() && !state.channel) openChannel(fromHash);
  });
}

function applyAccess() {
  const access = state.access;
  if (!access) {
    $("access").textContent = "Signed in";
    return;
  }
  const what = access.can_command ? "read and command" : "read only";
  const channels = access.channels === null ? "all channels" : access.channels.join(", ");
  const session = state.session;
  $("access").textContent = session ? `Signed in as ${session.email} (${roleText(session.role)})` : `Signed in (${what}, ${channels})`;
  $("people-link").hidden = !session;
  $("command-disabled").textContent = session
    ? "Your account is read only: it cannot send commands. The account owner can give you full access."
    : "This key is read-only: it cannot send commands.";
  $("command-form").hidden = !access.can_command;
  $("command-disabled").hidden = access.can_command;
}

// ------------------------------------------------------ devices, channels

/** Who is signed in (a key or a session); a new sign-in is a new value. */
function signedIn() {
  return state.key ?? state.session;
}

async function refresh() {
  clearTimeout(state.refreshTimer);
  const key = signedIn();
  if (!key) return;
  try {
    if (!state.access) {
      const access = await api("GET", "/v1/me");
      if (signedIn() !== key) return;
      state.access = access;
      applyAccess();
    }
    const [devices, channels] = await Promise.all([api("GET", "/v1/devices"), api("GET", "/v1/channels")]);
    // Signed out (or in with another key) meanwhile: this answer is stale.
    if (signedIn() !== key) return;
    state.devices = devices.devices;
    state.channels = channels.channels;
    renderDevices();
    renderChannels();
    showBanner("");
  } catch (error) {
    if (signedIn() !== key) return;
    if (error.code === "unauthorized") {
      signOut(refused(), "error");
      return;
    }
    showBanner(error.kind === "unreachable" ? MESSAGES.unreachable : describeError(error));
  }
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, REFRESH_MS);
}

function renderDevices() {
  const body = $("devices").tBodies[0];
  const rows = state.devices.map((device) => {
    const row = document.createElement("tr");
    row.dataset.device = device.id;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = device.id;
    row.append(th);
    const badge = document.createElement("span");
    badge.className = `badge ${device.online ? "online" : "offline"}`;
    const offlineFor = !device.online && device.last_seen_ms != null ? ` for ${durationText(Date.now() - device.last_seen_ms)}` : "";
    badge.textContent = device.online ? "Online" : `Offline${offlineFor}`;
    cell(row, badge, "status");
    cell(row, device.last_seen_ms == null ? "never" : timeElement(device.last_seen_ms, device.online ? "now" : agoText(device.last_seen_ms)), "last-seen");
    cell(row, signalText(device) || "not reported", "signal");
    cell(row, device.firmware_version ?? "unknown", "firmware");
    cell(row, String(device.messages_today), "number messages-today");
    return row;
  });
  body.replaceChildren(...rows);
  $("devices-empty").hidden = state.devices.length > 0;

  const select = $("command-device");
  const selected = select.value;
  select.replaceChildren(
    ...state.devices.map((device) => {
      const option = document.createElement("option");
      option.value = device.id;
      option.textContent = `${device.id} (${device.online ? "online" : "offline"})`;
      return option;
    }),
  );
  if (state.devices.some((device) => device.id === selected)) select.value = selected;
  // A device chosen for the first time (the list's first) fills the form.
  offerCommands(select.value !== selected);
}

/**
 * The command form offers the commands the chosen device declared; when
 * the customer picks a device (`choose`), its first command and example
 * fill the form.
 */
function offerCommands(choose = false) {
  const device = state.devices.find((entry) => entry.id === $("command-device").value);
  const commands = device?.commands ?? [];
  $("command-channels").replaceChildren(
    ...commands.map((command) => {
      const option = document.createElement("option");
      option.value = command.channel;
      if (command.label) option.label = command.label;
      return option;
    }),
  );
  const hint = $("command-hint");
  if (!device) {
    hint.textContent = "";
  } else if (commands.length === 0) {
    hint.textContent = `${device.id} declared no commands; type the command channel its firmware handles.`;
  } else {
    const names = commands.map((command) => (command.label ? `${command.channel} (${command.label})` : command.channel));
    hint.textContent = `${device.id} takes: ${names.join(", ")}.`;
    const channel = $("command-channel");
    if (choose) {
      if (!commands.some((command) => command.channel === channel.value.trim())) {
        channel.value = commands[0].channel;
      }
      fillExample();
    }
  }
}

/** Puts the declared example payload of the chosen command in the form. */
function fillExample() {
  const device = state.devices.find((entry) => entry.id === $("command-device").value);
  const command = device?.commands?.find((entry) => entry.channel === $("command-channel").value.trim());
  if (command && command.example !== null && command.example !== undefined) {
    $("command-payload").value = JSON.stringify(command.example);
  }
}

function renderChannels() {
  const list = $("channels");
  list.replaceChildren(
    ...state.channels.map((channel) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.channel = channel.name;
      const stored = Math.max(0, channel.next_offset - channel.first_offset);
      button.append(`Open ${channel.name} `);
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = `(${stored} stored)`;
      button.append(meta);
      button.addEventListener("click", () => openChannel(channel.name));
      item.append(button);
      return item;
    }),
  );
  $("channels-empty").hidden = state.channels.length > 0;
}

async function claim(event) {
  event.preventDefault();
  const input = $("claim-code");
  const message = $("claim-message");
  const code = input.value.trim();
  if (!code) {
    setMessage(message, "Enter the claim code printed on the device's label.", "error");
    input.setAttribute("aria-invalid", "true");
    return;
  }
  // Claim codes are 12 characters of Crockford's base 32; dashes, spaces
  // and case do not matter (the server normalizes the same way).
  const normalized = code.replace(/[-\s]/g, "").toUpperCase();
  if (!/^[0-9A-Z]{12}$/.test(normalized)) {
    setMessage(message, "A claim code has 12 letters and digits, like XXXX-XXXX-XXXX. Check the code on the device's label.", "error");
    input.setAttribute("aria-invalid", "true");
    return;
  }
  $("claim").disabled = true;
  setMessage(message, "Claiming…");
  try {
    const answer = await api("POST", "/v1/claim", { claim_code: code });
    input.value = "";
    input.removeAttribute("aria-invalid");
    setMessage(message, `Device ${answer.device} is now yours.`, "ok");
    refresh();
  } catch (error) {
    if (error.code === "unauthorized") {
      signOut(refused(), "error");
      return;
    }
    if (error.code === "unknown_claim_code" || error.code === "claim_code_expired" || error.code === "malformed") {
      input.setAttribute("aria-invalid", "true");
    }
    const text =
      error.code !== "forbidden"
        ? describeError(error)
        : state.session
          ? "Your account is read only: it cannot add devices. Ask the account owner to add it, or to give you full access."
          : "This key is read-only; claiming a device needs a read and command key.";
    setMessage(message, text, "error");
  } finally {
    $("claim").disabled = false;
  }
}

// ------------------------------------------------------------- commands

const STATUS_TEXT = {
  ok: "done",
  rejected: "rejected (the device could not use the payload)",
  failed: "failed (the device accepted it, then failed)",
  unsupported: "unsupported (the device has no handler for this channel)",
};

async function sendCommand(event) {
  event.preventDefault();
  const message = $("command-message");
  const device = $("command-device").value;
  const channel = $("command-channel").value.trim();
  const payloadText = $("command-payload").value;
  if (!device) {
    setMessage(message, "Choose a device.", "error");
    return;
  }
  if (!channel) {
    setMessage(message, "Enter the command channel (for example relay).", "error");
    return;
  }
  let payload;
  try {
    payload = payloadText.trim() === "" ? null : JSON.parse(payloadText);
    $("command-payload").removeAttribute("aria-invalid");
  } catch (error) {
    $("command-payload").setAttribute("aria-invalid", "true");
    setMessage(message, `The payload is not valid JSON: ${error.message}`, "error");
    return;
  }
  $("send-command").disabled = true;
  setMessage(message, `Sending to ${device}…`);
  try {
    const answer = await api("POST", `/v1/devices/${encodeURIComponent(device)}/commands`, { channel, payload });
    const status = STATUS_TEXT[answer.status] ?? answer.status;
    const kind = answer.status === "ok" ? "ok" : "error";
    setMessage(message, `Acknowledged by ${device}: ${status}. Result: ${JSON.stringify(answer.result)}`, kind);
  } catch (error) {
    if (error.code === "unauthorized") {
      signOut(refused(), "error");
      return;
    }
    setMessage(message, describeError(error, { device }), "error");
  } finally {
    $("send-command").disabled = false;
  }
}

// -------------------------------------------------------- live channel

function channelFromHash() {
  const match = /^#channel=(.+)$/.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

/**
 * One open channel: a receiver WebSocket that replays history, then
 * delivers live events; reconnects with backoff and resumes from the last
 * offset it showed, so the table has no gap and no duplicate.
 */
class LiveChannel {
  constructor(name, from) {
    this.name = name;
    this.from = from;
    this.fromKnown = from;
    this.lastOffset = null;
    this.attempt = 0;
    this.socket = null;
    this.closed = false;
    this.timers = new Set();
    this.pingId = 0;
    this.pongTimer = null;
    this.received = 0;
    this.summaryTimer = null;
    this.body = $("events").tBodies[0];
    this.status = $("connection");
    this.readings = new ReadingsView($("readings"), { channel: name, request });
    this.onFilter = () => this.filterRows();
    $("readings").addEventListener("filter", this.onFilter);
  }

  /** Loads the readings, then subscribes where their series ends. */
  async start() {
    try {
      const next = await this.readings.load();
      // The table replays the last HISTORY messages; the charts take live
      // events from the series' end on.
      this.from = Math.max(this.fromKnown, next - HISTORY, 1);
    } catch {
      // The charts said why; the live table still works.
    }
    this.connect();
  }

  setStatus(text, kind) {
    this.status.textContent = text;
    this.status.className = `connection ${kind ?? ""}`;
  }

  later(callback, ms) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      callback();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  connect() {
    if (this.closed) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let socket;
    try {
      // A key in its subprotocol, or the session cookie with its CSRF token.
      const credential = state.key ? `tether-key.${state.key}` : `tether-csrf.${state.session?.csrf_token}`;
      socket = new WebSocket(`${scheme}://${location.host}/v1/receiver`, ["tether.v1", credential]);
    } catch {
      signOut(refused(), "error");
      return;
    }
    this.socket = socket;
    this.setStatus(this.attempt === 0 ? "Connecting…" : "Reconnecting…", "waiting");
    socket.onopen = () => {
      const from = this.lastOffset === null ? this.from : this.lastOffset + 1;
      socket.send(JSON.stringify({ v: 1, subscribe: { channel: this.name, from, describe: true } }));
      this.schedulePing(socket);
    };
    socket.onmessage = (message) => this.handle(socket, message.data);
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.dropped(close.code);
    };
  }

  handle(socket, text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.event) {
      this.onEvent(message.event);
    } else if (message.description) {
      this.readings.describe(message.description);
    } else if (message.subscribed) {
      const first = message.subscribed.first_offset;
      this.attempt = 0;
      let note = "";
      if (this.lastOffset !== null && first > this.lastOffset + 1) {
        note = ` ${first - this.lastOffset - 1} older messages were deleted by retention while disconnected.`;
      }
      let resumed = "";
      if (this.lastOffset !== null) {
        resumed = ` Resumed after offset ${this.lastOffset}${note ? "." : ", with nothing missed."}`;
      }
      this.setStatus(`Live: receiving channel ${this.name}.${resumed}${note}`, "live");
    } else if (message.pong) {
      clearTimeout(this.pongTimer);
      this.timers.delete(this.pongTimer);
      this.schedulePing(socket);
    } else if (message.error) {
      const code = message.error.code;
      if (code === 6) {
        this.setStatus(`This key may not read channel ${this.name}.`, "error");
        this.close();
      } else if (code === 5) {
        signOut(refused(), "error");
      } else {
        this.setStatus(`The server reported an error: ${message.error.message}`, "error");
      }
    }
  }

  onEvent(event) {
    if (event.channel !== this.name) return;
    if (this.lastOffset !== null && event.offset <= this.lastOffset) return;
    this.lastOffset = event.offset;
    this.received += 1;
    const row = document.createElement("tr");
    row.dataset.offset = String(event.offset);
    cell(row, String(event.offset), "number offset");
    cell(row, timeElement(event.server_time_ms, timeText(event.server_time_ms)), "time");
    cell(row, event.device, "device");
    row.dataset.device = event.device;
    cell(row, valuesText(event.payload, this.readings.fieldsOf(event.device)) || "–", "values");
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "JSON";
    const pre = document.createElement("pre");
    pre.textContent = payloadText(event.payload);
    details.append(summary, pre);
    cell(row, details, "payload");
    row.hidden = !this.readings.shows(event.device);
    this.body.prepend(row);
    while (this.body.rows.length > MAX_ROWS) this.body.lastElementChild.remove();
    this.readings.add(event);
    this.scheduleSummary();
  }

  scheduleSummary() {
    if (this.summaryTimer !== null) return;
    this.summaryTimer = this.later(() => {
      this.summaryTimer = null;
      $("live-summary").textContent = `${this.received} messages on ${this.name}; the latest has offset ${this.lastOffset}.`;
    }, 3000);
  }

  schedulePing(socket) {
    this.later(() => {
      if (this.socket !== socket || socket.readyState !== WebSocket.OPEN) return;
      this.pingId = (this.pingId + 1) >>> 0;
      socket.send(JSON.stringify({ v: 1, ping: { id: this.pingId } }));
      this.pongTimer = this.later(() => {
        // No pong: a half-open connection. Drop it and reconnect.
        if (this.socket !== socket) return;
        this.socket = null;
        socket.onclose = null;
        socket.close();
        this.dropped(0);
      }, PONG_TIMEOUT_MS);
    }, PING_MS);
  }

  async dropped(code) {
    if (this.closed) return;
    if (code === 4005 && state.session) {
      // The session ended, or the member's rights changed: ask which.
      let session = null;
      try {
        session = await currentSession();
      } catch {
        session = state.session;
      }
      if (this.closed) return;
      if (!session) {
        signOut(refused(), "error");
        return;
      }
      state.session = session;
      state.access = sessionAccess(session);
      applyAccess();
    } else if (code === 4005) {
      signOut(refused(), "error");
      return;
    }
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    // Find out why, to say so: the server is down, or the key is refused.
    let reason = "The connection to the server was lost.";
    let kind = "waiting";
    try {
      await api("GET", "/v1/me");
    } catch (error) {
      if (error.code === "unauthorized") {
        signOut(refused(), "error");
        return;
      }
      if (error.kind === "unreachable") {
        reason = "Server unreachable.";
        kind = "error";
      }
    }
    if (this.closed) return;
    const shown = this.lastOffset === null ? "" : ` Messages up to offset ${this.lastOffset} are shown; the rest follow on reconnect.`;
    this.setStatus(`${reason} Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s (attempt ${this.attempt}).${shown}`, kind);
    this.later(() => this.connect(), delay);
  }

  close() {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.onclose = null;
      socket.close(1000);
    }
  }

  /** Rows of devices the filter hides are hidden too. */
  filterRows() {
    for (const row of this.body.rows) row.hidden = !this.readings.shows(row.dataset.device);
  }

  destroy() {
    this.close();
    $("readings").removeEventListener("filter", this.onFilter);
    this.readings.destroy();
    this.body.replaceChildren();
    $("live-summary").textContent = "";
  }
}

function openChannel(name) {
  const channel = name.trim();
  if (!channel) return;
  closeChannel();
  const known = state.channels.find((entry) => entry.name === channel);
  const from = known ? Math.max(known.first_offset, known.next_offset - HISTORY, 1) : 1;
  $("channel-name").textContent = channel;
  $("channel-view").hidden = false;
  if (location.hash !== `#channel=${encodeURIComponent(channel)}`) {
    history.replaceState(null, "", `#channel=${encodeURIComponent(channel)}`);
  }
  state.channel = new LiveChannel(channel, from);
  state.channel.start();
  $("channel-title").scrollIntoView({ block: "start" });
}

function closeChannel() {
  if (state.channel) {
    state.channel.destroy();
    state.channel = null;
  }
  $("channel-view").hidden = true;
  if (location.hash) history.replaceState(null, "", location.pathname);
}

// ----------------------------------------------------------------- start

function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("password-form").addEventListener("submit", signInWithPassword);
  $("sign-out").addEventListener("click", () => signOut());
  $("claim-form").addEventListener("submit", claim);
  $("command-form").addEventListener("submit", sendCommand);
  $("command-device").addEventListener("change", () => offerCommands(true));
  $("command-channel").addEventListener("change", fillExample);
  $("open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    openChannel($("open-channel").value);
  });
  $("close-channel").addEventListener("click", closeChannel);
  if (location.hash === "#key") $("key-sign-in").open = true;
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) {
    // Checked by the first refresh: a refused key signs out with a message.
    enterApp(key, null);
  } else {
    currentSession()
      .then((session) => (session ? enterSession(session) : showSignIn()))
      .catch((error) => showSignIn(accountMessage(error), "error"));
  }
}

start();
