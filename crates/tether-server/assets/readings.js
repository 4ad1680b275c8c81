// tether dashboard: the readings of one channel, as readings.
//
// One chart per quantity (small multiples sharing the time axis and the
// cursor), in the unit and scale the devices declared (GET /v1/descriptions,
// and `description` messages on the receiver WebSocket), one line per
// device, with a device filter; any time range, downsampled by the server
// (GET /v1/series: min/max/mean per bucket, computed in the database); the
// live tail joins the range at the series' `next_offset`; exports streamed
// by the server (GET /v1/export, CSV or JSON lines).
//
// The page gives `request(path)` (an authenticated fetch) and the element
// to draw in; app.js feeds live events and descriptions.

/** The ranges a customer picks from (ms). */
export const RANGES = {
  hour: { label: "Last hour", span: 3_600_000 },
  day: { label: "Last day", span: 86_400_000 },
  week: { label: "Last week", span: 7 * 86_400_000 },
  month: { label: "Last 30 days", span: 30 * 86_400_000 },
};
/** Points per chart the server downsamples to. */
const BUCKETS = 600;
/** Live points kept per chart beyond the range's buckets. */
const MAX_LIVE_POINTS = 2_000;
const COLORS = ["#0a58ca", "#d63384", "#198754", "#fd7e14", "#6f42c1", "#20c997", "#dc3545", "#6c757d"];

// ------------------------------------------------------------- formatting

/** Decimals to show a value scaled by `scale` with when none are declared. */
function defaultDecimals(scale) {
  if (scale === 1) return null;
  let decimals = 0;
  let step = Math.abs(scale);
  while (decimals < 9 && Math.abs(step - Math.round(step)) > 1e-9) {
    step *= 10;
    decimals += 1;
  }
  return decimals;
}

/** A declared field with its defaults filled in. */
function normalize(field) {
  const scale = typeof field.scale === "number" ? field.scale : 1;
  return {
    key: field.key ?? "",
    label: field.label || field.key || "value",
    unit: field.unit ?? "",
    scale,
    decimals: typeof field.decimals === "number" ? field.decimals : defaultDecimals(scale),
    min: typeof field.min === "number" ? field.min : null,
    max: typeof field.max === "number" ? field.max : null,
  };
}

/** What an undescribed numeric member is shown as. */
function undescribed(key) {
  return normalize({ key, label: key || "value" });
}

/** A raw value as the field declares it: scaled, rounded, with its unit. */
export function formatValue(raw, field, withUnit = true) {
  const value = raw * field.scale;
  const text =
    field.decimals === null
      ? String(Math.round(value * 1e9) / 1e9)
      : value.toLocaleString("en-US", {
          minimumFractionDigits: field.decimals,
          maximumFractionDigits: field.decimals,
          useGrouping: false,
        });
  if (!withUnit || !field.unit) return text;
  return field.unit === "%" ? `${text} %` : `${text} ${field.unit}`;
}

/** The numeric members of a payload: `[key, value]`; `""` for a bare number. */
export function numericMembers(payload) {
  if (typeof payload === "number" && Number.isFinite(payload)) return [["", payload]];
  if (payload && typeof payload === "object" && !Array.isArray(payload)) {
    return Object.entries(payload).filter(([, value]) => typeof value === "number" && Number.isFinite(value));
  }
  return [];
}

/** "Temperature 24.6 °C · Humidity 43 %" for a payload of a device. */
export function valuesText(payload, fields) {
  return numericMembers(payload)
    .map(([key, raw]) => {
      const field = fields?.get(key) ?? undescribed(key);
      return `${field.label} ${formatValue(raw, field)}`;
    })
    .join(" · ");
}

/** Fields by key of each device, from `GET /v1/descriptions` entries. */
function fieldsByDevice(descriptions) {
  const devices = new Map();
  for (const description of descriptions) {
    devices.set(description.device, new Map(description.fields.map((field) => [field.key, normalize(field)])));
  }
  return devices;
}

/** A quantity: what one chart shows (same label and unit). */
function quantityId(field) {
  return `${field.label}\u0000${field.unit}`;
}

// ----------------------------------------------------------- device list

/** "−67 dBm (good)" for a device that reported its signal, else "". */
export function signalText(device) {
  if (typeof device.rssi_dbm !== "number") return "";
  const dbm = device.rssi_dbm;
  const quality = dbm >= -60 ? "excellent" : dbm >= -70 ? "good" : dbm >= -80 ? "fair" : "weak";
  return `${dbm} dBm (${quality})`;
}

/** "for 3 h" since `ms`, rounded for people. */
export function durationText(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h`;
  return `${Math.round(hours / 24)} days`;
}

// ---------------------------------------------------------------- charts

/** One chart: one quantity, one line per device. */
class QuantityChart {
  constructor(parent, field, devices, colorOf) {
    this.field = field;
    this.devices = devices; // device names, the lines in order
    this.colorOf = colorOf;
    this.times = [];
    this.values = devices.map(() => []);
    this.plot = null;
    this.figure = document.createElement("figure");
    this.figure.className = "quantity";
    this.figure.dataset.quantity = field.unit ? `${field.label} (${field.unit})` : field.label;
    const caption = document.createElement("figcaption");
    caption.textContent = this.figure.dataset.quantity;
    this.plotElement = document.createElement("div");
    this.plotElement.className = "plot";
    this.plotElement.setAttribute("role", "img");
    this.plotElement.setAttribute("aria-label", `${caption.textContent} over time, one line per device`);
    // The chart in words: the latest value of each device.
    this.latest = document.createElement("p");
    this.latest.className = "latest";
    this.figure.append(caption, this.plotElement, this.latest);
    parent.append(this.figure);
  }

  /** "Latest: kitchen-1 21.5 °C · kitchen-2 20.9 °C", of the devices shown. */
  summarize(shown) {
    const parts = [];
    this.devices.forEach((device, index) => {
      if (!shown.has(device)) return;
      const line = this.values[index];
      for (let at = line.length - 1; at >= 0; at -= 1) {
        if (line[at] !== null && line[at] !== undefined) {
          parts.push(`${device} ${formatValue(line[at], { ...this.field, scale: 1 })}`);
          return;
        }
      }
    });
    this.latest.textContent = parts.length ? `Latest: ${parts.join(" · ")}` : "No values in this range.";
    this.figure.dataset.points = String(this.times.length);
    this.figure.dataset.first = String(this.times.length ? Math.round(this.times[0] * 1000) : 0);
    this.figure.dataset.last = String(this.times.length ? Math.round(this.times[this.times.length - 1] * 1000) : 0);
  }

  /** Adds a point at `time` (s) for line `index`; times arrive in order per source. */
  point(time, index, value) {
    let at = this.times.length;
    if (at > 0 && this.times[at - 1] > time) {
      at = this.times.findIndex((t) => t >= time);
    }
    if (this.times[at] !== time) {
      this.times.splice(at, 0, time);
      for (const line of this.values) line.splice(at, 0, null);
    }
    this.values[index][at] = value;
  }

  trim(before) {
    let drop = 0;
    while (drop < this.times.length && this.times[drop] < before) drop += 1;
    drop = Math.max(drop, this.times.length - MAX_LIVE_POINTS - BUCKETS);
    if (drop > 0) {
      this.times.splice(0, drop);
      for (const line of this.values) line.splice(0, drop);
    }
  }

  draw(range, shown) {
    const field = this.field;
    const width = Math.max(240, this.figure.clientWidth || 300);
    const height = width < 500 ? 160 : 190;
    if (typeof window.uPlot !== "function") {
      this.plotElement.textContent = "The chart library did not load.";
      this.summarize(shown);
      return;
    }
    const data = [this.times, ...this.values];
    const fixed = field.min !== null && field.max !== null ? [field.min, field.max] : null;
    const options = {
      width,
      height,
      cursor: { sync: { key: "tether-readings" } },
      legend: { live: true },
      scales: {
        x: { time: true, range: () => [range.since / 1000, range.until / 1000] },
        y: fixed ? { range: () => fixed } : {},
      },
      axes: [
        {},
        {
          size: 56,
          values: (_, ticks) => ticks.map((tick) => formatValue(tick, { ...field, scale: 1 }, false)),
        },
      ],
      series: [
        { label: "time" },
        ...this.devices.map((device) => ({
          label: device,
          stroke: this.colorOf(device),
          width: 2,
          spanGaps: true,
          show: shown.has(device),
          value: (_, value) => (value == null ? "–" : formatValue(value, { ...field, scale: 1 })),
        })),
      ],
    };
    this.plot?.destroy();
    this.plot = new window.uPlot(options, data, this.plotElement);
    this.summarize(shown);
  }

  resize() {
    const width = Math.max(240, this.figure.clientWidth || 300);
    this.plot?.setSize({ width, height: width < 500 ? 160 : 190 });
  }

  destroy() {
    this.plot?.destroy();
    this.figure.remove();
  }
}

// ----------------------------------------------------------------- view

/** The readings of one channel: toolbar, charts, export. */
export class ReadingsView {
  /**
   * @param {HTMLElement} root where to draw (emptied)
   * @param {{channel: string, request: (path: string) => Promise<Response>, onStatus?: (text: string, kind?: string) => void}} options
   */
  constructor(root, { channel, request, onStatus }) {
    this.root = root;
    this.channel = channel;
    this.request = request;
    this.onStatus = onStatus ?? (() => {});
    this.range = { key: "hour", since: 0, until: 0, live: true };
    this.fields = new Map(); // device -> Map(key -> field)
    this.devices = []; // every device seen, sorted
    this.shown = new Set(); // devices the filter shows
    this.filterTouched = false;
    this.charts = new Map(); // quantity id -> QuantityChart
    this.nextOffset = null; // live events from here join the charts
    // Live events that arrive while a range is being read: the new series
    // may end before them, so they join it once it is drawn.
    this.loading = false;
    this.held = [];
    this.heldOverflow = false;
    this.bucketMs = 0;
    this.generation = 0;
    this.redrawTimer = null;
    this.build();
    this.resize = () => {
      for (const chart of this.charts.values()) chart.resize();
    };
    window.addEventListener("resize", this.resize);
  }

  build() {
    const ranges = Object.entries(RANGES)
      .map(([key, range]) => `<option value="${key}">${range.label}</option>`)
      .join("");
    this.root.innerHTML = `
      <div class="readings-toolbar">
        <div class="field">
          <label for="range">Time range</label>
          <select id="range">${ranges}<option value="custom">Custom range…</option></select>
        </div>
        <form id="custom-range" class="custom-range" hidden novalidate>
          <div class="field"><label for="range-from">From</label><input id="range-from" type="datetime-local" required></div>
          <div class="field"><label for="range-to">To</label><input id="range-to" type="datetime-local" required></div>
          <button type="submit" id="range-apply">Show range</button>
        </form>
        <fieldset id="device-filter" class="device-filter" hidden>
          <legend>Devices</legend>
          <div class="choices"></div>
        </fieldset>
        <div class="export" role="group" aria-label="Export">
          <button type="button" id="export-csv" class="secondary">Download CSV</button>
          <button type="button" id="export-jsonl" class="secondary">Download JSON lines</button>
        </div>
      </div>
      <p id="readings-status" class="readings-status" role="status" aria-live="polite"></p>
      <div id="charts" class="charts"></div>
      <p id="charts-empty" class="help" hidden>No numeric readings in this range.</p>`;
    this.$ = (id) => this.root.querySelector(`#${id}`);
    this.$("range").addEventListener("change", () => this.pickRange());
    this.$("custom-range").addEventListener("submit", (event) => {
      event.preventDefault();
      this.applyCustom();
    });
    this.$("export-csv").addEventListener("click", () => this.download("csv"));
    this.$("export-jsonl").addEventListener("click", () => this.download("jsonl"));
  }

  status(text, kind) {
    const element = this.$("readings-status");
    element.textContent = text;
    element.className = `readings-status ${kind ?? ""}`;
  }

  /** The fields a device declared, by key (for the message table). */
  fieldsOf(device) {
    return this.fields.get(device);
  }

  colorOf(device) {
    const index = this.devices.indexOf(device);
    return COLORS[(index < 0 ? 0 : index) % COLORS.length];
  }

  pickRange() {
    const key = this.$("range").value;
    const custom = key === "custom";
    this.$("custom-range").hidden = !custom;
    if (custom) {
      // Start from the range shown now.
      const toLocal = (ms) => {
        const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
        return date.toISOString().slice(0, 16);
      };
      this.$("range-from").value = toLocal(this.range.since);
      this.$("range-to").value = toLocal(this.range.until);
      this.$("range-from").focus();
      return;
    }
    this.range = { key, since: 0, until: 0, live: true };
    this.load();
  }

  applyCustom() {
    const from = this.$("range-from");
    const to = this.$("range-to");
    const since = Date.parse(from.value);
    const until = Date.parse(to.value);
    from.removeAttribute("aria-invalid");
    to.removeAttribute("aria-invalid");
    if (Number.isNaN(since) || Number.isNaN(until)) {
      (Number.isNaN(since) ? from : to).setAttribute("aria-invalid", "true");
      this.status("Enter both the start and the end of the range (date and time).", "error");
      return;
    }
    if (until <= since) {
      to.setAttribute("aria-invalid", "true");
      this.status("The end of the range must be after its start: change From or To.", "error");
      return;
    }
    this.range = { key: "custom", since, until, live: false };
    this.load();
  }

  /** The query of the range shown: `since_ms`, `until_ms` (none: live). */
  rangeQuery() {
    if (this.range.live) {
      const now = Date.now();
      this.range.until = now;
      this.range.since = now - RANGES[this.range.key].span;
      return `since_ms=${Math.floor(this.range.since)}`;
    }
    return `since_ms=${Math.floor(this.range.since)}&until_ms=${Math.floor(this.range.until)}`;
  }

  async json(path) {
    const response = await this.request(path);
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const error = new Error(body?.error?.message ?? response.statusText);
      error.code = body?.error?.code ?? `http_${response.status}`;
      error.status = response.status;
      throw error;
    }
    return body;
  }

  /**
   * Reads the descriptions and the series of the range and draws them.
   * Returns the series' `next_offset`: live events from there continue it.
   */
  async load() {
    const generation = ++this.generation;
    const channel = encodeURIComponent(this.channel);
    this.loading = true;
    this.status("Loading readings…", "waiting");
    this.root.setAttribute("aria-busy", "true");
    try {
      const query = this.rangeQuery();
      const [descriptions, series] = await Promise.all([
        this.json(`/v1/descriptions?channel=${channel}`),
        this.json(`/v1/series?channel=${channel}&${query}&buckets=${BUCKETS}`),
      ]);
      if (generation !== this.generation) return this.nextOffset;
      this.fields = fieldsByDevice(descriptions.descriptions);
      this.bucketMs = series.bucket_ms;
      this.nextOffset = series.next_offset;
      this.render(series.series);
      const what = this.range.live ? RANGES[this.range.key].label.toLowerCase() : "the chosen range";
      const bucket = durationText(series.bucket_ms);
      this.status(
        this.range.live
          ? `Showing ${what} (${bucket} averages), then live.`
          : `Showing ${what} (${bucket} averages).`,
        "ok",
      );
    } catch (error) {
      if (generation !== this.generation) return this.nextOffset;
      this.status(
        error.code === "forbidden"
          ? "This key may not read this channel: open a channel it may read, or sign in with a key that may read this one."
          : `The readings could not be loaded (${error.message}). Try again, or choose another range.`,
        "error",
      );
      throw error;
    } finally {
      if (generation === this.generation) {
        this.root.removeAttribute("aria-busy");
        this.loading = false;
        // What came during the read and is not in the series continues it.
        const held = this.held;
        this.held = [];
        if (this.heldOverflow) {
          this.heldOverflow = false;
          this.load().catch(() => {});
        } else {
          for (const event of held) this.add(event);
        }
      }
    }
    return this.nextOffset;
  }

  /** The field of `key` of `device`, described or not. */
  fieldOf(device, key) {
    return this.fields.get(device)?.get(key) ?? undescribed(key);
  }

  render(lines) {
    for (const chart of this.charts.values()) chart.destroy();
    this.charts.clear();
    const devices = new Set(this.devices);
    for (const line of lines) devices.add(line.device);
    for (const device of this.fields.keys()) devices.add(device);
    this.setDevices([...devices].sort());
    // Quantities in the order devices declared their fields, then the rest.
    const quantities = new Map();
    const add = (field) => {
      const id = quantityId(field);
      if (!quantities.has(id)) quantities.set(id, field);
    };
    for (const fields of this.fields.values()) for (const field of fields.values()) add(field);
    for (const line of lines) add(this.fieldOf(line.device, line.key));
    // Each chart has a line for each device with values in the range (or,
    // when none has, for those that described the quantity).
    const lineDevices = new Map();
    for (const line of lines) {
      const id = quantityId(this.fieldOf(line.device, line.key));
      if (!lineDevices.has(id)) lineDevices.set(id, new Set());
      lineDevices.get(id).add(line.device);
    }
    const box = this.$("charts");
    for (const [id, field] of quantities) {
      let devices = lineDevices.get(id);
      if (!devices) {
        devices = new Set(
          [...this.fields.entries()]
            .filter(([, fields]) => [...fields.values()].some((f) => quantityId(f) === id))
            .map(([device]) => device),
        );
      }
      const ordered = this.devices.filter((device) => devices.has(device));
      this.charts.set(id, new QuantityChart(box, field, ordered, (device) => this.colorOf(device)));
    }
    // A bucket's mean is drawn at its start: every event of the live tail
    // is newer than every event of the series, so the line stays in order.
    for (const line of lines) {
      const field = this.fieldOf(line.device, line.key);
      const chart = this.charts.get(quantityId(field));
      const index = chart.devices.indexOf(line.device);
      for (const [start, , , , mean] of line.points) {
        chart.point(start / 1000, index, mean * field.scale);
      }
    }
    this.draw();
  }

  setDevices(devices) {
    const added = devices.filter((device) => !this.devices.includes(device));
    this.devices = devices;
    for (const device of added) if (!this.filterTouched || this.shown.size === 0) this.shown.add(device);
    const fieldset = this.$("device-filter");
    fieldset.hidden = devices.length === 0;
    const choices = fieldset.querySelector(".choices");
    choices.replaceChildren(
      ...devices.map((device, index) => {
        const label = document.createElement("label");
        label.className = "choice";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = device;
        box.id = `device-filter-${index}`;
        box.checked = this.shown.has(device);
        box.addEventListener("change", () => {
          this.filterTouched = true;
          if (box.checked) this.shown.add(device);
          else this.shown.delete(device);
          this.applyFilter();
        });
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = this.colorOf(device);
        swatch.setAttribute("aria-hidden", "true");
        label.append(box, swatch, device);
        return label;
      }),
    );
  }

  applyFilter() {
    for (const chart of this.charts.values()) {
      chart.devices.forEach((device, index) => chart.plot?.setSeries(index + 1, { show: this.shown.has(device) }));
      chart.summarize(this.shown);
    }
    this.root.dispatchEvent(new CustomEvent("filter", { detail: { shown: new Set(this.shown) } }));
  }

  /** Whether the filter shows `device` (for the message table). */
  shows(device) {
    return this.shown.size === 0 || this.shown.has(device) || !this.devices.includes(device);
  }

  draw() {
    const empty = this.charts.size === 0;
    this.$("charts-empty").hidden = !empty;
    if (this.range.live) {
      this.range.until = Date.now();
      this.range.since = this.range.until - RANGES[this.range.key].span;
    }
    for (const chart of this.charts.values()) {
      if (this.range.live) chart.trim(this.range.since / 1000);
      chart.draw(this.range, this.shown);
    }
  }

  scheduleDraw() {
    if (this.redrawTimer !== null) return;
    this.redrawTimer = setTimeout(() => {
      this.redrawTimer = null;
      this.draw();
    }, 250);
  }

  /** A device described (or described again) the channel, live. */
  describe(description) {
    if (description.channel !== this.channel) return;
    this.fields.set(description.device, new Map(description.fields.map((field) => [field.key, normalize(field)])));
    // New units or labels change the charts: read the range again.
    this.load().catch(() => {});
  }

  /** A live event (app.js calls this for every event of the channel). */
  add(event) {
    if (this.loading && this.range.live) {
      // Kept until the series being read is drawn (a bounded number: past
      // that, the charts are read again when it is).
      if (this.held.length < MAX_LIVE_POINTS) this.held.push(event);
      else this.heldOverflow = true;
      return;
    }
    if (this.nextOffset === null || event.offset < this.nextOffset || !this.range.live) return;
    this.nextOffset = event.offset + 1;
    const members = numericMembers(event.payload);
    if (members.length === 0) return;
    if (!this.devices.includes(event.device)) {
      // A device new to the charts: draw them again with its line.
      this.load().catch(() => {});
      return;
    }
    const time = event.server_time_ms / 1000;
    let missing = false;
    for (const [key, raw] of members) {
      const field = this.fieldOf(event.device, key);
      const chart = this.charts.get(quantityId(field));
      const index = chart ? chart.devices.indexOf(event.device) : -1;
      if (index < 0) {
        // A quantity or a line the charts do not have yet.
        missing = true;
        continue;
      }
      chart.point(time, index, raw * field.scale);
    }
    if (missing) {
      this.load().catch(() => {});
      return;
    }
    this.scheduleDraw();
  }

  /** The export URL of the range shown and the devices the filter shows. */
  exportPath(format) {
    const parts = [`channel=${encodeURIComponent(this.channel)}`, `format=${format}`];
    parts.push(`since_ms=${Math.floor(this.range.since)}`);
    if (!this.range.live) parts.push(`until_ms=${Math.floor(this.range.until)}`);
    const shown = this.devices.filter((device) => this.shown.has(device));
    if (shown.length > 0 && shown.length < this.devices.length) parts.push(`devices=${shown.map(encodeURIComponent).join(",")}`);
    return `/v1/export?${parts.join("&")}`;
  }

  /** Fetches an export (streamed by the server) and saves it as a file. */
  async download(format) {
    const button = this.$(format === "csv" ? "export-csv" : "export-jsonl");
    const path = this.exportPath(format);
    button.disabled = true;
    this.status("Preparing the download…", "waiting");
    try {
      const response = await this.request(path);
      if (!response.ok) {
        let message = response.statusText;
        try {
          message = (await response.json()).error.message;
        } catch {
          /* keep the status text */
        }
        throw new Error(message);
      }
      const blob = await response.blob();
      const disposition = response.headers.get("Content-Disposition") ?? "";
      const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? `export.${format}`;
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = name;
      link.className = "download-link";
      link.hidden = true;
      this.root.append(link);
      link.click();
      setTimeout(() => {
        URL.revokeObjectURL(link.href);
        link.remove();
      }, 60_000);
      this.root.dataset.lastExport = path;
      this.status(`Downloaded ${name} (${blob.size.toLocaleString("en-US")} bytes).`, "ok");
    } catch (error) {
      this.status(`The export failed: ${error.message}. Try again, or choose a shorter range.`, "error");
    } finally {
      button.disabled = false;
    }
  }

  destroy() {
    this.generation += 1;
    clearTimeout(this.redrawTimer);
    window.removeEventListener("resize", this.resize);
    for (const chart of this.charts.values()) chart.destroy();
    this.charts.clear();
    this.root.replaceChildren();
  }
}
