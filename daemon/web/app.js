// The dashboard: four views drawn from the JSON API (docs/DASHBOARD.md). Every value that
// comes from an entry reaches the page as text (textContent, attribute values), never as
// markup: there is no innerHTML here, and the Content-Security-Policy runs no other script.
"use strict";

const view = document.getElementById("view");
let session = null;
// What the current view must stop (feeds, timers) when another is drawn.
let stops = [];

// ---- Building blocks -----------------------------------------------------------------

/** An element with attributes and children; strings become text nodes, never markup. */
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A GET of the API, as JSON; a lost session goes back to the login page. */
async function api(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const url = query.toString() ? path + "?" + query : path;
  const answer = await fetch(url, { credentials: "same-origin" });
  return answerOf(answer);
}

async function answerOf(answer) {
  if (answer.status === 401) {
    location.replace("/login");
    throw new Error("the session has ended: log in again with witness web");
  }
  const body = await answer.json().catch(() => null);
  if (!answer.ok) {
    const message = body && body.error ? body.error.message : "HTTP " + answer.status;
    throw new Error(message);
  }
  return body;
}

/** A POST of the API with the session's CSRF secret. */
async function post(path) {
  const answer = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": session ? session.csrf : "" },
  });
  if (answer.status === 204) return null;
  return answerOf(answer);
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const timeOnly = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
});

/** A time in nanoseconds since the epoch, in the browser's time zone. */
function when(ns) {
  return ns === null || ns === undefined ? "" : dateTime.format(new Date(ns / 1e6));
}

function clock(ns) {
  return timeOnly.format(new Date(ns / 1e6));
}

/** The time of day for today's entries, the date and time for older ones. */
function moment(ns) {
  const date = new Date(ns / 1e6);
  return date.toDateString() === new Date().toDateString() ? timeOnly.format(date) : when(ns);
}

function count(n) {
  return n === null || n === undefined ? "" : Number(n).toLocaleString();
}

/** Micro-dollars as dollars: six digits for small sums, cents for large ones. */
function usd(micro) {
  if (micro === null || micro === undefined) return "";
  const dollars = micro / 1e6;
  return "$" + (Math.abs(dollars) >= 100 ? dollars.toFixed(2) : dollars.toFixed(6));
}

function duration(ns) {
  const ms = ns / 1e6;
  if (ms < 1) return (ns / 1e3).toFixed(0) + " µs";
  if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  return Math.floor(ms / 3600000) + " h " + Math.round((ms % 3600000) / 60000) + " min";
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return value.toFixed(unit ? 1 : 0) + " " + units[unit];
}

/** An entry's date: the client's when it gave one. */
function dateOf(line) {
  return line.client_ts !== null && line.client_ts !== undefined ? line.client_ts : line.ts;
}

/** The cost cell of an entry: dollars, "unpriced", or nothing for an entry without a call. */
function costCell(cost) {
  if (!cost) return el("td", { class: "num" });
  if (cost.cost_micro_usd === null || cost.cost_micro_usd === undefined) {
    return el("td", { class: "num unpriced", title: "no price for this model" }, "unpriced");
  }
  return el("td", { class: "num", title: cost.priced_by || "priced by the caller" }, usd(cost.cost_micro_usd));
}

function tokensText(cost) {
  if (!cost) return "";
  let text = count(cost.tokens_in) + " → " + count(cost.tokens_out);
  if (cost.cache_read_tokens) text += " (" + count(cost.cache_read_tokens) + " cached)";
  return text;
}

function traceLink(id) {
  if (id === null || id === undefined) return "";
  return el("a", { href: "#/trace/" + encodeURIComponent(id) }, id);
}

function status(text, bad) {
  return el("p", { class: bad ? "status bad" : "status", role: "status", "aria-live": "polite" }, text || "");
}

function setStatus(node, text, bad) {
  node.textContent = text;
  node.classList.toggle("bad", Boolean(bad));
}

function table(headings, body) {
  const head = el("tr", null, headings.map(([text, numeric]) => el("th", { scope: "col", class: numeric ? "num" : null }, text)));
  return el("div", { class: "scroll" }, el("table", null, el("thead", null, head), body));
}

function card(label, value, title) {
  return el("div", { class: "card", title: title || null }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

function field(name, label, value, attributes) {
  return el("label", null, label, el("input", Object.assign({ name, value: value || "", autocomplete: "off" }, attributes || {})));
}

function onStop(stop) {
  stops.push(stop);
}

// ---- Live ----------------------------------------------------------------------------

const LIVE_ROWS = 200;
const liveFilter = { component: "", event: "", model: "", trace: "", text: "" };

function liveView() {
  const form = el("form", { class: "filters", role: "search", "aria-label": "Filter the feed" },
    field("component", "Component", liveFilter.component),
    field("event", "Event", liveFilter.event),
    field("model", "Model", liveFilter.model),
    field("trace", "Trace", liveFilter.trace),
    field("text", "Text", liveFilter.text, { type: "search" }),
    el("button", { type: "submit", class: "primary" }, "Apply"));
  const pause = el("button", { type: "button", "aria-pressed": "false" }, "Pause");
  form.append(pause);
  const line = status("Connecting…");
  const body = el("tbody", { id: "live-rows" });
  let source = null;
  let paused = false;
  let pending = [];
  let received = 0;
  let lastSeq = null;
  let scheduled = false;

  function describe() {
    let text = (source && source.readyState === 1 ? "Live" : "Reconnecting…") + " · " + count(received) + " received";
    if (lastSeq !== null) text += " · up to seq " + count(lastSeq);
    if (paused) text += " · paused, " + count(pending.length) + (pending.length >= LIVE_ROWS ? "+" : "") + " new";
    setStatus(line, text, source && source.readyState !== 1);
  }

  function row(entry) {
    const cost = entry.cost;
    const model = cost && cost.model ? cost.model : "";
    return el("tr", { "data-seq": entry.seq, class: "fresh" },
      el("td", { title: when(dateOf(entry)) }, moment(dateOf(entry))),
      el("td", { class: "cut", title: entry.component }, entry.component),
      el("td", { class: "cut", title: entry.event }, entry.event),
      el("td", { class: "cut", title: entry.trace_id }, traceLink(entry.trace_id)),
      el("td", { class: "cut", title: model || null }, model),
      el("td", { class: "num" }, tokensText(cost)),
      costCell(cost));
  }

  // Draws at most five times a second, however fast entries come: only the newest rows
  // are ever on the page.
  function render() {
    scheduled = false;
    describe();
    if (paused || pending.length === 0) return;
    const fresh = pending.slice(-LIVE_ROWS).reverse().map(row);
    pending = [];
    body.prepend(...fresh);
    while (body.rows.length > LIVE_ROWS) body.lastElementChild.remove();
  }

  function schedule() {
    if (!scheduled) {
      scheduled = true;
      setTimeout(render, 200);
    }
  }

  function connect() {
    if (source) source.close();
    pending = [];
    body.replaceChildren();
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(liveFilter)) if (value) query.set(name, value);
    source = new EventSource("/api/feed" + (query.toString() ? "?" + query : ""));
    source.addEventListener("entries", (event) => {
      const entries = JSON.parse(event.data);
      received += entries.length;
      lastSeq = Number(event.lastEventId);
      for (const entry of entries) pending.push(entry);
      if (pending.length > 4 * LIVE_ROWS) pending = pending.slice(-LIVE_ROWS);
      schedule();
    });
    source.addEventListener("open", schedule);
    source.addEventListener("error", async () => {
      schedule();
      // A feed refused for want of a session never opens: find out, and go to the login.
      if (source.readyState === 2) {
        try {
          await api("/api/session");
        } catch (error) {
          setStatus(line, error.message, true);
        }
      }
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const name of Object.keys(liveFilter)) liveFilter[name] = form.elements[name].value.trim();
    received = 0;
    connect();
  });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    schedule();
  });
  onStop(() => source && source.close());
  view.replaceChildren(
    el("h1", null, "Live"),
    form,
    line,
    table([["Time"], ["Component"], ["Event"], ["Trace"], ["Model"], ["Tokens in → out", true], ["Cost", true]], body));
  connect();
}

// ---- Traces --------------------------------------------------------------------------

const SINCE = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, all: null };

function sinceNs(key) {
  const seconds = SINCE[key];
  return seconds ? String(BigInt(Date.now() - seconds * 1000) * 1000000n) : null;
}

function select(name, label, options, chosen) {
  return el("label", null, label, el("select", { name },
    options.map(([value, text]) => el("option", { value, selected: value === chosen }, text))));
}

const tracesFilter = { component: "", since: "all" };

function tracesView() {
  const form = el("form", { class: "filters", role: "search", "aria-label": "Filter the traces" },
    field("component", "Component", tracesFilter.component),
    select("since", "Active in", [["1h", "the last hour"], ["24h", "the last day"], ["7d", "the last 7 days"], ["30d", "the last 30 days"], ["all", "all time"]], tracesFilter.since),
    el("button", { type: "submit", class: "primary" }, "Apply"));
  const line = status("Loading…");
  const body = el("tbody", { id: "trace-rows" });
  const more = el("button", { type: "button", hidden: true }, "Older traces");
  let before = null;

  async function load(reset) {
    if (reset) {
      before = null;
      body.replaceChildren();
    }
    try {
      const page = await api("/api/traces", {
        component: tracesFilter.component,
        since: sinceNs(tracesFilter.since),
        before,
        limit: 50,
      });
      for (const trace of page.traces) {
        body.append(el("tr", null,
          el("td", null, traceLink(trace.trace_id)),
          el("td", null, when(trace.last_ts)),
          el("td", { class: "num" }, count(trace.entries)),
          el("td", { class: "num" }, duration(trace.last_ts - trace.first_ts)),
          el("td", { class: "wrap" }, trace.components.join(", ")),
          el("td", { class: "num" }, count(trace.tokens_in) + " → " + count(trace.tokens_out)),
          el("td", { class: "num" }, usd(trace.micro_usd),
            trace.unpriced ? el("span", { class: "unpriced" }, " + " + count(trace.unpriced) + " unpriced") : "")));
      }
      before = page.next_before;
      more.hidden = before === null || before === undefined;
      setStatus(line, body.rows.length ? count(body.rows.length) + " traces shown, the most recently active first" : "No traces.");
    } catch (error) {
      setStatus(line, error.message, true);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    tracesFilter.component = form.elements.component.value.trim();
    tracesFilter.since = form.elements.since.value;
    load(true);
  });
  more.addEventListener("click", () => load(false));
  view.replaceChildren(
    el("h1", null, "Traces"),
    form,
    line,
    table([["Trace"], ["Last activity"], ["Entries", true], ["Duration", true], ["Components"], ["Tokens in → out", true], ["Cost", true]], body),
    el("p", null, more));
  load(true);
}

function parsePayload(text) {
  if (typeof text !== "string") return text;
  try {
    return JSON.parse(text);
  } catch (error) {
    return text;
  }
}

/** OTLP spans of a trace as a tree by parent, with each span's share of the trace's time. */
function spanTree(entries) {
  const spans = entries
    .map((entry) => ({ entry, payload: entry.payload }))
    .filter(({ payload }) => payload && payload.otlp === "span" && payload.span_id);
  if (spans.length === 0) return null;
  const byId = new Map(spans.map((span) => [span.payload.span_id, span]));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    const parent = span.payload.parent_span_id;
    if (parent && byId.has(parent) && parent !== span.payload.span_id) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(span);
    } else {
      roots.push(span);
    }
  }
  const start = Math.min(...spans.map((span) => Number(span.payload.start_ns) || 0));
  const end = Math.max(...spans.map((span) => Number(span.payload.end_ns) || 0));
  const whole = Math.max(end - start, 1);
  const seen = new Set();
  function branch(list) {
    list.sort((a, b) => (Number(a.payload.start_ns) || 0) - (Number(b.payload.start_ns) || 0));
    return el("ul", { class: "tree" }, list.map((span) => {
      const id = span.payload.span_id;
      if (seen.has(id)) return null;
      seen.add(id);
      const took = Number(span.payload.duration_ns) || 0;
      const bar = el("span", { class: "span-bar", "aria-hidden": "true" });
      bar.style.width = Math.max(2, Math.round((took / whole) * 240)) + "px";
      bar.style.marginLeft = Math.round(((Number(span.payload.start_ns) - start) / whole) * 240) + "px";
      const holder = el("span", { class: "hide-narrow" }, bar);
      holder.style.width = "250px";
      holder.style.display = "inline-block";
      return el("li", null,
        el("div", { class: "span-row" },
          holder,
          el("a", { href: "#entry-" + span.entry.seq }, span.payload.name || span.entry.event),
          el("span", { class: "muted" }, duration(took)),
          span.entry.cost && span.entry.cost.model ? el("span", { class: "muted" }, span.entry.cost.model) : ""),
        children.has(id) ? branch(children.get(id)) : null);
    }));
  }
  return branch(roots);
}

async function traceView(id) {
  const line = status("Loading…");
  view.replaceChildren(el("h1", null, "Trace ", el("code", null, id)), line);
  const entries = [];
  let summary = null;
  try {
    let after = null;
    // A trace's page is bounded: the first 10,000 entries, in 1,000s.
    for (let pages = 0; pages < 10; pages += 1) {
      const page = await api("/api/trace", { id, after, limit: 1000 });
      summary = summary || page.summary;
      entries.push(...page.entries);
      after = page.next_after;
      if (after === null || after === undefined) break;
    }
  } catch (error) {
    setStatus(line, error.message, true);
    return;
  }
  if (!summary) {
    setStatus(line, "No entry has this trace id.", true);
    return;
  }
  for (const entry of entries) entry.payload = parsePayload(entry.payload);
  entries.sort((a, b) => dateOf(a) - dateOf(b) || a.seq - b.seq);
  setStatus(line, entries.length < summary.entries ? "Showing the first " + count(entries.length) + " entries." : "");
  const cards = el("div", { class: "cards" },
    card("Entries", count(summary.entries)),
    card("Started", when(summary.first_ts)),
    card("Duration", duration(summary.last_ts - summary.first_ts)),
    card("Tokens in → out", count(summary.tokens_in) + " → " + count(summary.tokens_out)),
    card("Cost", usd(summary.micro_usd) + (summary.unpriced ? " + " + count(summary.unpriced) + " unpriced" : "")),
    card("Components", summary.components.join(", ")));
  const tree = spanTree(entries);
  const body = el("tbody", null, entries.map((entry) => el("tr", { id: "entry-" + entry.seq, "data-seq": entry.seq },
    el("td", null, when(dateOf(entry))),
    el("td", null, entry.component),
    el("td", null, entry.event),
    el("td", null, entry.cost && entry.cost.model ? entry.cost.model : ""),
    el("td", { class: "num" }, tokensText(entry.cost)),
    costCell(entry.cost),
    el("td", { class: "wrap" }, el("details", null,
      el("summary", null, "payload"),
      el("pre", { class: "payload" }, typeof entry.payload === "string" ? entry.payload : JSON.stringify(entry.payload, null, 2)))))));
  view.append(cards,
    tree ? el("h2", null, "Spans") : null,
    tree,
    el("h2", null, "Entries, in time order"),
    table([["Time"], ["Component"], ["Event"], ["Model"], ["Tokens in → out", true], ["Cost", true], ["Payload"]], body));
}

// ---- Spend ---------------------------------------------------------------------------

const RANGES = {
  "24h": { seconds: 86400, by: "hour", label: "the last 24 hours, by hour" },
  "7d": { seconds: 7 * 86400, by: "day", label: "the last 7 days, by UTC day" },
  "30d": { seconds: 30 * 86400, by: "day", label: "the last 30 days, by UTC day" },
  "90d": { seconds: 90 * 86400, by: "day", label: "the last 90 days, by UTC day" },
};
const spendChoice = { range: "7d", stack: "model" };
const COLOURS = ["#1f5fbf", "#d9822b", "#2a9d5c", "#b3261e", "#7b4fb8", "#6c7a89", "#c4a000"];
const STACK_GROUPS = 6;

/** Bucket keys of the range, oldest first: `YYYY-MM-DD` or `YYYY-MM-DDTHH:00Z`, UTC. */
function buckets(range) {
  const step = range.by === "hour" ? 3600000 : 86400000;
  const now = Date.now();
  const first = Math.floor((now - range.seconds * 1000) / step) * step + step;
  const keys = [];
  for (let t = first; t <= now; t += step) {
    const iso = new Date(t).toISOString();
    keys.push({ key: range.by === "hour" ? iso.slice(0, 13) + ":00Z" : iso.slice(0, 10), time: t / 1000 });
  }
  return keys;
}

async function spendView() {
  const form = el("form", { class: "filters", "aria-label": "Spend range" },
    select("range", "Range", Object.entries(RANGES).map(([key, range]) => [key, range.label]), spendChoice.range),
    select("stack", "Stacked by", [["model", "model"], ["component", "component"]], spendChoice.stack),
    el("button", { type: "submit", class: "primary" }, "Show"));
  const line = status("Loading…");
  const holder = el("div");
  view.replaceChildren(el("h1", null, "Spend"), form, line, holder);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    spendChoice.range = form.elements.range.value;
    spendChoice.stack = form.elements.stack.value;
    spendView();
  });
  const range = RANGES[spendChoice.range];
  const since = String(BigInt(Date.now() - range.seconds * 1000) * 1000000n);
  const stack = spendChoice.stack;
  let groups;
  let models;
  let total;
  let budgets;
  try {
    [groups, models, budgets] = await Promise.all([
      api("/api/cost", { by: stack, since, limit: 1000 }),
      stack === "model" ? null : api("/api/cost", { by: "model", since, limit: 1000 }),
      api("/api/budgets"),
    ]);
    models = models || groups;
    total = groups.total;
  } catch (error) {
    setStatus(line, error.message, true);
    return;
  }
  setStatus(line, "Spend over " + range.label + ". Times are in your time zone, " + Intl.DateTimeFormat().resolvedOptions().timeZone + ".");
  holder.append(el("div", { class: "cards" },
    card("Cost", usd(total.micro_usd)),
    card("Entries", count(total.entries)),
    card("Input tokens", count(total.tokens_in)),
    card("Cached input", count(total.cache_read_tokens)),
    card("Cache writes", count(total.cache_write_tokens)),
    card("Reasoning", count(total.reasoning_tokens)),
    card("Output tokens", count(total.tokens_out)),
    card("Unpriced entries", count(total.unpriced))));
  const unpriced = models.rows.filter((row) => row.unpriced > 0);
  if (unpriced.length) {
    holder.append(el("div", { class: "callout", id: "unpriced" },
      el("strong", null, "No price: "),
      unpriced.map((row, index) => [index ? "; " : "", count(row.unpriced) + (row.unpriced === 1 ? " entry of " : " entries of "), el("code", null, row.key === null ? "(no model)" : row.key)]),
      ". Their cost is unknown, not zero: add a [[price]] to the configuration (docs/PRICES.md)."));
  }
  const chart = el("div", { id: "chart", role: "img", "aria-label": "Cost over time, stacked by " + stack });
  holder.append(el("h2", null, "Cost over time, stacked by " + stack), chart);
  const top = groups.rows.filter((row) => row.micro_usd > 0 && row.key !== null).slice(0, STACK_GROUPS);
  const keys = buckets(range);
  try {
    const series = await Promise.all(top.map((row) => api("/api/cost", Object.assign(
      { by: range.by, since, limit: keys.length + 2 },
      { [stack]: row.key }))));
    drawChart(chart, keys, top, series, range, stack);
  } catch (error) {
    chart.append(status(error.message, true));
  }
  const rows = el("tbody", { id: "spend-rows" }, groups.rows.map((row) => el("tr", null,
    el("td", null, row.key === null ? "(none)" : row.key),
    el("td", { class: "num" }, count(row.entries)),
    el("td", { class: "num" }, count(row.tokens_in)),
    el("td", { class: "num" }, count(row.cache_read_tokens)),
    el("td", { class: "num" }, count(row.cache_write_tokens)),
    el("td", { class: "num" }, count(row.reasoning_tokens)),
    el("td", { class: "num" }, count(row.tokens_out)),
    el("td", { class: "num" }, usd(row.micro_usd)),
    el("td", { class: row.unpriced ? "num unpriced" : "num" }, row.unpriced ? count(row.unpriced) : ""))));
  holder.append(el("h2", null, "By " + stack),
    table([[stack[0].toUpperCase() + stack.slice(1)], ["Entries", true], ["Input", true], ["Cached", true], ["Cache writes", true], ["Reasoning", true], ["Output", true], ["Cost", true], ["Unpriced", true]], rows));
  holder.append(el("h2", null, "Budgets"));
  if (!budgets.length) {
    holder.append(el("p", { class: "muted" }, "No budgets are configured ([[budget]] in the configuration, docs/PRICES.md)."));
  } else {
    const body = el("tbody", { id: "budget-rows" }, budgets.map((budget) => {
      const fill = el("span");
      fill.style.width = Math.min(100, budget.ratio * 100).toFixed(1) + "%";
      const bar = el("div", { class: "bar" + (budget.ratio >= 1 ? " over" : budget.ratio >= 0.8 ? " warn" : ""), role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(budget.ratio * 100) }, fill);
      return el("tr", null,
        el("td", null, budget.name),
        el("td", null, budget.period + " from " + when(budget.period_start)),
        el("td", { class: "num" }, usd(budget.spent_micro_usd)),
        el("td", { class: "num" }, usd(budget.limit_micro_usd)),
        el("td", null, bar),
        el("td", { class: "num" }, (budget.ratio * 100).toFixed(1) + "%"),
        el("td", { class: "num" }, usd(budget.projected_micro_usd)),
        el("td", { class: budget.unpriced ? "num unpriced" : "num" }, budget.unpriced ? count(budget.unpriced) : ""));
    }));
    holder.append(table([["Budget"], ["Period"], ["Spent", true], ["Limit", true], ["Used"], ["", true], ["Projected", true], ["Unpriced", true]], body));
  }
}

function drawChart(chart, keys, top, series, range, stack) {
  if (typeof uPlot === "undefined" || top.length === 0) {
    chart.append(el("p", { class: "muted" }, top.length ? "The chart library did not load." : "Nothing was spent in this range."));
    return;
  }
  const index = new Map(keys.map((bucket, position) => [bucket.key, position]));
  const values = series.map((report) => {
    const column = new Array(keys.length).fill(0);
    for (const row of report.rows) {
      const position = index.get(row.key);
      if (position !== undefined) column[position] = row.micro_usd / 1e6;
    }
    return column;
  });
  // Stacked: each series is drawn as the sum of itself and those below it.
  const stacked = values.map((column, s) => column.map((_, i) => values.slice(0, s + 1).reduce((sum, col) => sum + col[i], 0)));
  const width = Math.max(320, Math.min(chart.parentElement.clientWidth || 900, 1500) - 8);
  const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.8, 64] }) : undefined;
  const options = {
    width,
    height: 280,
    scales: { x: { time: true } },
    axes: [{}, { size: 72, values: (u, ticks) => ticks.map((tick) => "$" + tick.toFixed(tick < 1 ? 4 : 2)) }],
  };
  // Days are UTC days, and are labelled so; hours are shown in the browser's time zone.
  if (range.by === "day") options.tzDate = (seconds) => uPlot.tzDate(new Date(seconds * 1e3), "Etc/UTC");
  // uPlot draws series in order: the tallest (the sum of all) first, so that each smaller
  // sum is drawn over it.
  options.series = [{ label: range.by === "hour" ? "hour" : "UTC day" }];
  const order = top.map((_, s) => s).reverse();
  for (const s of order) {
    const row = top[s];
    options.series.push({
      label: row.key === null ? "(none)" : row.key,
      stroke: COLOURS[s % COLOURS.length],
      fill: COLOURS[s % COLOURS.length] + "cc",
      paths: bars,
      value: (u, v, si, i) => (i === null || i === undefined ? "" : "$" + values[s][i].toFixed(6)),
    });
  }
  const data = [keys.map((bucket) => bucket.time)].concat(order.map((s) => stacked[s]));
  const plot = new uPlot(options, data, chart);
  onStop(() => plot.destroy());
  chart.append(el("p", { class: "legend-note" }, "Each colour is one " + stack + "; the top " + top.length + " by cost in the range."));
}

// ---- Health --------------------------------------------------------------------------

async function healthView() {
  const line = status("Loading…");
  const cards = el("div", { class: "cards", id: "health-cards" });
  const forward = el("div");
  const note = el("pre", { class: "payload", id: "checkpoint" });
  const verifyButton = el("button", { type: "button", class: "primary" }, "Verify the log");
  const verifyLine = status("");
  view.replaceChildren(el("h1", null, "Health"), line, cards, forward,
    el("h2", null, "Latest signed checkpoint"), note,
    el("h2", null, "Verification"),
    el("p", null, "Recomputes the hash chain over the whole log on a read connection, in the background, one at a time; ingest goes on."),
    el("p", null, verifyButton), verifyLine);

  async function refresh() {
    try {
      const stats = await api("/api/stats");
      const disk = stats.disk_days_left === null ? "no estimate" : stats.disk_days_left.toFixed(1) + " days";
      cards.replaceChildren(
        card("Entries / s", stats.entries_per_sec.toFixed(1)),
        card("Entries", count(stats.entries_total), "since the daemon started"),
        card("Last seq", count(stats.last_seq)),
        card("Queue", count(stats.queue_depth) + " / " + count(stats.queue_capacity)),
        card("Commit p50 / p99", count(stats.commit_us.p50) + " / " + count(stats.commit_us.p99) + " µs"),
        card("Ack p50 / p99", count(stats.ack_us.p50) + " / " + count(stats.ack_us.p99) + " µs"),
        card("Connections", count(stats.connections) + " / " + count(stats.connections_max)),
        card("Database + WAL", bytes(stats.db_bytes + stats.wal_bytes)),
        card("Disk free", bytes(stats.disk_free_bytes), stats.disk_low || ""),
        card("Disk left", disk),
        card("Retention", stats.entries_pruned ? count(stats.entries_pruned) + " pruned, from seq " + count(stats.first_seq) : "keeps everything so far"),
        card("Memory", bytes(stats.rss_bytes)));
      if (stats.failure) cards.prepend(card("Failure", stats.failure));
      forward.replaceChildren();
      if (stats.forward) {
        const f = stats.forward;
        forward.append(el("h2", null, "Forwarding"), el("div", { class: "cards" },
          card("Host", f.host_id), card("State", f.state),
          card("Lag", count(f.lag_entries) + " entries, " + f.lag_seconds.toFixed(1) + " s"),
          card("Forwarded up to", count(f.forwarded_seq))));
      }
      setStatus(line, "Updated " + clock(Date.now() * 1e6) + " · " + stats.server);
    } catch (error) {
      setStatus(line, error.message, true);
    }
  }

  async function checkpoint() {
    try {
      const report = await api("/api/checkpoint");
      note.textContent = report.note || "No checkpoint is signed yet.";
    } catch (error) {
      note.textContent = error.message;
    }
  }

  function showVerify(state) {
    if (state.state === "running") {
      setStatus(verifyLine, "Verifying… started " + when(state.started_ns));
      verifyButton.disabled = true;
      return true;
    }
    verifyButton.disabled = false;
    if (state.state === "done") {
      const [kind, detail] = Object.entries(state.report)[0];
      const took = duration(state.finished_ns - state.started_ns);
      if (kind === "Intact") setStatus(verifyLine, "Intact: " + count(detail.count) + " entries verified in " + took + ", finished " + when(state.finished_ns) + ".");
      else setStatus(verifyLine, kind + ": " + (detail.seq ? "seq " + detail.seq + ": " : "") + detail.reason, true);
    } else if (state.state === "failed") {
      setStatus(verifyLine, "The verification could not run: " + state.error, true);
    } else {
      setStatus(verifyLine, "Not verified from this page yet.");
    }
    return false;
  }

  async function poll() {
    try {
      if (showVerify(await api("/api/verify"))) setTimeout(poll, 1000);
    } catch (error) {
      setStatus(verifyLine, error.message, true);
    }
  }

  verifyButton.addEventListener("click", async () => {
    try {
      showVerify(await post("/api/verify"));
      setTimeout(poll, 500);
    } catch (error) {
      setStatus(verifyLine, error.message, true);
    }
  });
  const timer = setInterval(refresh, 2000);
  onStop(() => clearInterval(timer));
  await Promise.all([refresh(), checkpoint(), poll()]);
}

// ---- Routing -------------------------------------------------------------------------

function route() {
  for (const stop of stops) stop();
  stops = [];
  const hash = location.hash || "#/live";
  const [, name, rest] = /^#\/([a-z]+)(?:\/(.*))?$/.exec(hash) || [null, "live", null];
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.dataset.view === name || (name === "trace" && link.dataset.view === "traces");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (name === "traces") tracesView();
  else if (name === "trace" && rest) traceView(decodeURIComponent(rest));
  else if (name === "spend") spendView();
  else if (name === "health") healthView();
  else liveView();
  document.title = "witness: " + name;
  view.focus({ preventScroll: true });
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await post("/api/logout");
  } finally {
    location.replace("/login");
  }
});

(async function start() {
  try {
    session = await api("/api/session");
    document.getElementById("who").textContent = "uid " + session.uid;
  } catch (error) {
    return;
  }
  window.addEventListener("hashchange", route);
  route();
})();
