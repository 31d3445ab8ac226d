// The usage attribution page: the monthly table from /api/v1/usage/monthly-attribution, an hourly
// chart from /api/v1/usage/hourly-attribution and the org's attribution tags through /api/overrides.
// Plain JavaScript, no dependencies; the strict Content-Security-Policy of the page allows no inline
// script, so everything is wired up here.
"use strict";

const KEYS_STORAGE = "usage-attribution-keys";
const MONTHLY_PATH = "/api/v1/usage/monthly-attribution";
const SESSION_PATH = "/usage/session";
const OVERRIDES_PATH = "/api/overrides";
const USAGE_TYPE_NAMES = {
  ingested_spans_bytes_usage: "Ingested bytes",
  estimated_ingested_spans_usage: "Spans",
  rum_browser_mobile_sessions_usage: "RUM sessions",
  apm_host_usage: "APM hosts",
};
// Distinct sessions or hosts: an identity seen under two tag sets counts in both, so these never add;
// they are estimates, and only the CSV answer carries their 95% confidence bounds.
const DISTINCT_TYPES = new Set(["rum_browser_mobile_sessions_usage", "apm_host_usage"]);
// Guards against a runaway loop should a server ever hand back a cursor forever.
const MAX_PAGES = 10000;
const numberFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

const state = {
  keys: null, // {apiKey, appKey} once signed in
  org: null, // {org_id, org_name, public_id}
  shown: null, // the last answer: {month, breakdown, types, records, updatedAt}
  sort: null, // {column, ascending}; null: the API's order
  tagsEtag: null, // the ETag of the tags as loaded; null when the org has none of its own
};

function element(id) {
  return document.getElementById(id);
}

function percentageField(usageType) {
  return usageType.replace(/_usage$/, "_percentage");
}

function showingPercentages() {
  return document.querySelector('input[name="show-as"]:checked').value === "percentages";
}

// --- requests --------------------------------------------------------------------------------------

const STATUS_EXPLANATIONS = {
  400: "The request was refused",
  403: "Forbidden: this API key and application key are not accepted (a pair with the usage_read scope is needed)",
  404: "Not available on this service",
  412: "Changed by someone else",
  428: "Changed by someone else",
  429: "Too many requests: wait a minute, then try again",
  503: "The usage ledger cannot be read right now",
};

async function errorText(response) {
  let detail = "";
  try {
    const body = await response.json();
    const messages = Array.isArray(body.errors) ? body.errors : [body.error];
    detail = messages.filter((message) => typeof message === "string" && message).join("; ");
  } catch {
    // Not JSON: the status alone says enough.
  }
  const explanation = STATUS_EXPLANATIONS[response.status] || response.statusText || "Request failed";
  const suffix = detail && !explanation.startsWith(detail) ? ` (${detail})` : "";
  return `${explanation}${suffix} [HTTP ${response.status}]`;
}

function apiHeaders(keys) {
  return { "DD-API-KEY": keys.apiKey, "DD-APPLICATION-KEY": keys.appKey, Accept: "application/json" };
}

async function getJson(path, keys) {
  const response = await fetch(path, { headers: apiHeaders(keys), credentials: "omit", cache: "no-store" });
  if (!response.ok) {
    throw new Error(await errorText(response));
  }
  return response.json();
}

// --- signing in and out ----------------------------------------------------------------------------

async function signIn(keys) {
  state.org = await getJson(SESSION_PATH, keys);
  state.keys = keys;
  sessionStorage.setItem(KEYS_STORAGE, JSON.stringify(keys));
  element("signed-in-as").textContent = `Signed in to ${state.org.org_name}`;
  element("signed-in-as").hidden = false;
  element("sign-out").hidden = false;
  element("sign-in").hidden = true;
  element("monthly").hidden = false;
  element("trends").hidden = false;
  element("edit-tags").hidden = false;
  element("tags-tenant").textContent = state.org.org_name;
  element("sign-in-error").textContent = "";
  loadTags().catch((error) => {
    element("tags-error").textContent = error.message;
  });
}

function signOut(message) {
  sessionStorage.removeItem(KEYS_STORAGE);
  state.keys = null;
  state.org = null;
  state.shown = null;
  state.sort = null;
  state.tagsEtag = null;
  element("sign-in-form").reset();
  const messages = ["monthly-status", "monthly-error", "trends-status", "trends-error", "tags-status", "tags-error"];
  for (const id of [...messages, "usage-caption"]) {
    element(id).textContent = "";
  }
  element("dimensions").value = "";
  for (const part of ["thead", "tbody", "tfoot"]) {
    element("usage-table").querySelector(part).replaceChildren();
  }
  element("download-csv").disabled = true;
  element("signed-in-as").hidden = true;
  element("sign-out").hidden = true;
  element("monthly").hidden = true;
  element("trends").hidden = true;
  element("trend-figure").hidden = true;
  element("trend-chart").replaceChildren();
  element("trend-legend").replaceChildren();
  element("edit-tags").hidden = true;
  element("sign-in").hidden = false;
  element("sign-in-error").textContent = message || "";
  element("api-key").focus();
}

async function onSignIn(event) {
  event.preventDefault();
  const keys = { apiKey: element("api-key").value.trim(), appKey: element("app-key").value.trim() };
  if (!keys.apiKey || !keys.appKey) {
    element("sign-in-error").textContent = "Enter both the API key and the application key.";
    return;
  }
  element("sign-in-error").textContent = "Signing in…";
  try {
    await signIn(keys);
    element("month").focus();
  } catch (error) {
    element("sign-in-error").textContent = `Not signed in. ${error.message}`;
  }
}

// --- the monthly table -----------------------------------------------------------------------------

function breakdownKeys() {
  const keys = [];
  for (const key of element("breakdown").value.split(",")) {
    const trimmed = key.trim();
    if (trimmed && !keys.includes(trimmed)) {
      keys.push(trimmed);
    }
  }
  return keys;
}

function chosenTypes() {
  return Array.from(document.querySelectorAll('input[name="usage-type"]:checked'), (box) => box.value);
}

// The monthly query of the table, for its JSON pages and for its CSV alike.
function monthParameters(month, breakdown, types) {
  const parameters = new URLSearchParams({
    start_month: month,
    end_month: month,
    fields: types.flatMap((type) => [type, percentageField(type)]).join(","),
  });
  if (breakdown.length) {
    parameters.set("tag_breakdown_keys", breakdown.join(","));
  }
  return parameters;
}

// Every record of the month, following next_record_id to the last page.
async function fetchMonth(month, breakdown, types) {
  const parameters = monthParameters(month, breakdown, types);
  const records = [];
  let updatedAt = null;
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const pageParameters = new URLSearchParams(parameters);
    if (cursor) {
      pageParameters.set("next_record_id", cursor);
    }
    const answer = await getJson(`${MONTHLY_PATH}?${pageParameters}`, state.keys);
    records.push(...answer.usage);
    if (answer.usage.length) {
      updatedAt = answer.usage[0].updated_at;
    }
    cursor = answer.metadata.pagination.next_record_id;
    if (!cursor) {
      return { records, updatedAt };
    }
  }
  throw new Error(`more than ${MAX_PAGES} pages: narrow the tag keys`);
}

// --- the 95% bounds of distinct counts, from the API's CSV -----------------------------------------

// The rows of an RFC 4180 text: fields split by commas, records by CRLF or LF; a quoted field may hold
// commas, line breaks and doubled quotes. A final line break ends the last record, not a new one.
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  let index = 0;
  while (index < text.length) {
    const character = text[index];
    if (quoted) {
      if (character !== '"') {
        field += character;
      } else if (text[index + 1] === '"') {
        field += '"';
        index++;
      } else {
        quoted = false;
      }
    } else if (character === '"') {
      quoted = true;
    } else if (character === ",") {
      row.push(field);
      field = "";
    } else if (character === "\n" || character === "\r") {
      if (character === "\r" && text[index + 1] === "\n") {
        index++;
      }
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else {
      field += character;
    }
    index++;
  }
  if (quoted) {
    throw new Error("the CSV ends inside a quoted field");
  }
  if (field || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

// A text cell as the API's CSV writes it: one a spreadsheet would run as a formula starts with a quote.
function csvText(value) {
  return /^[=+\-@\t\r]/.test(value) ? "'" + value : value;
}

// Which row a record is: its org and its tag values, written as the CSV writes them (so a tag value
// that itself starts with a quote is never confused with an escaped one).
function boundsKey(publicId, tagValues) {
  return JSON.stringify([csvText(publicId), ...tagValues.map(csvText)]);
}

function recordBoundsKey(record, breakdown) {
  const tags = breakdown.map((key) => (record.tags === null ? "" : (record.tags[key] || [""])[0]));
  return boundsKey(record.public_id, tags);
}

// The CSV of the table's query (one answer with every record: the same records as the JSON pages,
// which leave out a record whose requested fields are all 0): per row key, each distinct count's
// {lower, upper}. The CSV's cells are already as written, so its keys are compared as they are.
async function fetchBounds(month, breakdown, types) {
  const parameters = monthParameters(month, breakdown, types);
  const headers = { ...apiHeaders(state.keys), Accept: "text/csv" };
  const response = await fetch(`${MONTHLY_PATH}?${parameters}`, { headers, credentials: "omit", cache: "no-store" });
  if (!response.ok) {
    throw new Error(await errorText(response));
  }
  const [header, ...rows] = parseCsv(await response.text());
  const column = (name) => {
    const index = header.indexOf(name);
    if (index < 0) {
      throw new Error(`the CSV has no ${name} column`);
    }
    return index;
  };
  const publicId = column("public_id");
  const tagColumns = breakdown.map(column);
  const boundColumns = types.filter((type) => DISTINCT_TYPES.has(type)).map((type) => ({
    type,
    lower: column(`${type}_lower_bound`),
    upper: column(`${type}_upper_bound`),
  }));
  const bounds = new Map();
  for (const row of rows) {
    const key = JSON.stringify([row[publicId], ...tagColumns.map((index) => row[index])]);
    const byType = {};
    for (const { type, lower, upper } of boundColumns) {
      byType[type] = { lower: Number(row[lower]), upper: Number(row[upper]) };
    }
    bounds.set(key, byType);
  }
  return bounds;
}

async function onShowUsage(event) {
  event.preventDefault();
  const month = element("month").value;
  const types = chosenTypes();
  element("monthly-error").textContent = "";
  if (!/^\d{4}-\d{2}$/.test(month)) {
    element("monthly-error").textContent = "Choose a month.";
    return;
  }
  if (!types.length) {
    element("monthly-error").textContent = "Choose at least one usage type.";
    return;
  }
  const breakdown = breakdownKeys();
  element("monthly-status").textContent = "Loading…";
  try {
    // Bounds are extra: the table is shown without them should the CSV be refused.
    const boundsRequest = types.some((type) => DISTINCT_TYPES.has(type))
      ? fetchBounds(month, breakdown, types).catch((error) => error)
      : Promise.resolve(null);
    const { records, updatedAt } = await fetchMonth(month, breakdown, types);
    const bounds = await boundsRequest;
    const boundsError = bounds instanceof Error ? bounds.message : null;
    state.shown = {
      month,
      breakdown,
      types,
      records,
      updatedAt,
      bounds: bounds instanceof Map ? bounds : null,
      boundsError,
    };
    state.sort = null;
    renderTable();
  } catch (error) {
    showFailure("monthly", error);
  }
}

// A section's failed read: its status cleared, the error shown; a refused key pair signs out.
function showFailure(section, error) {
  element(`${section}-status`).textContent = "";
  element(`${section}-error`).textContent = error.message;
  if (error.message.includes("[HTTP 403]")) {
    signOut(`Signed out: ${error.message}`);
  }
}

// The table's columns: the org, one per tag key, one per usage type.
function columns() {
  const { breakdown, types } = state.shown;
  const percentages = showingPercentages();
  return [
    { id: "org", label: "Org", numeric: false },
    ...breakdown.map((key) => ({ id: `tag:${key}`, label: key, tag: key, numeric: false })),
    ...types.map((type) => ({
      id: type,
      label: USAGE_TYPE_NAMES[type] + (percentages ? " (%)" : ""),
      field: percentages ? percentageField(type) : type,
      numeric: true,
    })),
  ];
}

// A cell's value: a number, a string, or null where the org has no such tag key.
function cellValue(record, column) {
  if (column.id === "org") {
    return record.org_name;
  }
  if (column.tag !== undefined) {
    return record.tags === null ? null : (record.tags[column.tag] || [""])[0];
  }
  return record.values[column.field];
}

function sortedRecords(shownColumns) {
  const records = [...state.shown.records];
  if (!state.sort) {
    return records;
  }
  const column = shownColumns.find((candidate) => candidate.id === state.sort.column);
  const direction = state.sort.ascending ? 1 : -1;
  records.sort((a, b) => {
    const left = cellValue(a, column);
    const right = cellValue(b, column);
    if (left === null || right === null) {
      return (left === null) - (right === null); // rows without the tag last, either direction
    }
    const order = column.numeric ? left - right : String(left).localeCompare(String(right));
    return direction * order;
  });
  return records;
}

function formatNumber(value) {
  return numberFormat.format(value) + (showingPercentages() ? " %" : "");
}

function cell(tag, value, numeric) {
  const node = document.createElement(tag);
  if (value === null) {
    node.textContent = "—";
    node.title = "this org has no such tag key";
    node.dataset.value = "";
  } else if (numeric) {
    node.textContent = formatNumber(value);
    node.dataset.value = String(value);
    node.className = "number";
  } else {
    node.textContent = value;
    node.dataset.value = value;
  }
  return node;
}

// What the table shows, as rows of values (the header names the API's fields): the CSV's content.
function shownRows() {
  const shownColumns = columns();
  const header = shownColumns.map((column) => (column.numeric ? column.field : column.tag || "org_name"));
  const records = sortedRecords(shownColumns);
  const rows = records.map((record) => shownColumns.map((column) => cellValue(record, column)));
  const totals = shownColumns.map((column, index) =>
    column.numeric ? rows.reduce((sum, row) => sum + row[index], 0) : index === 0 ? "Total" : "",
  );
  return { shownColumns, header, records, rows, totals };
}

// A distinct count's value cell: its 95% confidence bounds on hover (percentages have none).
function showBounds(node, record, column) {
  const { bounds, breakdown } = state.shown;
  if (!bounds || !column.numeric || column.field !== column.id || !DISTINCT_TYPES.has(column.id)) {
    return;
  }
  const found = (bounds.get(recordBoundsKey(record, breakdown)) || {})[column.id];
  if (!found) {
    return;
  }
  node.title = `95% confidence: ${numberFormat.format(found.lower)} - ${numberFormat.format(found.upper)}`;
  node.dataset.lowerBound = String(found.lower);
  node.dataset.upperBound = String(found.upper);
}

function renderTable() {
  const table = element("usage-table");
  const { shownColumns, records, rows, totals } = shownRows();
  const headerRow = document.createElement("tr");
  for (const column of shownColumns) {
    const th = document.createElement("th");
    th.scope = "col";
    if (column.numeric) {
      th.className = "number";
    }
    const sorted = state.sort && state.sort.column === column.id;
    th.setAttribute("aria-sort", sorted ? (state.sort.ascending ? "ascending" : "descending") : "none");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sort";
    button.dataset.column = column.id;
    button.textContent = column.label;
    const arrow = document.createElement("span");
    arrow.setAttribute("aria-hidden", "true");
    arrow.textContent = sorted ? (state.sort.ascending ? " ▲" : " ▼") : "";
    button.append(arrow);
    button.addEventListener("click", () => sortBy(column));
    th.append(button);
    headerRow.append(th);
  }
  table.querySelector("thead").replaceChildren(headerRow);
  const body = rows.map((values, rowIndex) => {
    const tr = document.createElement("tr");
    values.forEach((value, index) => {
      const numeric = shownColumns[index].numeric;
      const node = cell(index === 0 ? "th" : "td", value, numeric);
      showBounds(node, records[rowIndex], shownColumns[index]);
      tr.append(node);
      if (index === 0) {
        tr.firstChild.scope = "row";
      }
    });
    return tr;
  });
  table.querySelector("tbody").replaceChildren(...body);
  const totalsRow = document.createElement("tr");
  totals.forEach((value, index) => {
    const node = cell(index === 0 ? "th" : "td", value, shownColumns[index].numeric);
    if (index === 0) {
      node.scope = "row";
    }
    totalsRow.append(node);
  });
  table.querySelector("tfoot").replaceChildren(totalsRow);
  const { month, breakdown, updatedAt } = state.shown;
  const by = breakdown.length ? `by ${breakdown.join(", ")}` : "by org";
  const asOf = updatedAt ? `, usage as of ${updatedAt.replace("T", " ").slice(0, 16)} UTC` : "";
  const kind = showingPercentages() ? "percentages of each org's month" : "values";
  element("usage-caption").textContent = `Usage in ${month} ${by} (${kind}${asOf})`;
  const boundsNote = state.shown.boundsError
    ? ` (confidence bounds unavailable: ${state.shown.boundsError})`
    : "";
  element("monthly-status").textContent =
    `${rows.length} ${rows.length === 1 ? "row" : "rows"}` +
    (rows.length ? "" : ": no usage recorded for this month") +
    boundsNote;
  element("download-csv").disabled = false;
}

function sortBy(column) {
  const ascending = state.sort && state.sort.column === column.id ? !state.sort.ascending : !column.numeric;
  state.sort = { column: column.id, ascending };
  renderTable();
  // Re-rendering replaced the header: keep the keyboard where it was.
  element("usage-table").querySelector(`button[data-column="${CSS.escape(column.id)}"]`).focus();
}

// --- CSV of exactly the shown table ----------------------------------------------------------------

// As the API's own CSV: every text cell quoted, and one a spreadsheet would run as a formula starts
// with a single quote.
function csvCell(value) {
  if (typeof value === "number") {
    return String(value);
  }
  const text = csvText(value === null ? "" : String(value));
  return `"${text.replace(/"/g, '""')}"`;
}

function downloadCsv() {
  const { header, rows, totals } = shownRows();
  const lines = [header, ...rows, totals].map((row) => row.map(csvCell).join(","));
  const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv;charset=utf-8" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `usage-${state.shown.month}-${showingPercentages() ? "percentages" : "values"}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

// --- trends: an hourly chart per tag set ------------------------------------------------------------

const HOURLY_PATH = "/api/v1/usage/hourly-attribution";
const HOUR_MS = 3600 * 1000;
const DAY_MS = 24 * HOUR_MS;
const SERIES_COLOURS = [
  "#0b5cad", "#d1495b", "#2e8540", "#e08e0b", "#6f42c1", "#138d90",
  "#a0522d", "#c2185b", "#5c6f00", "#3949ab", "#8d6e63", "#00796b",
];
const OTHER_COLOUR = "#9aa3ad";
const OTHER_LABEL = "other";
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 960, height: 340, left: 78, right: 16, top: 14, bottom: 54 };

// The hours [start, end) of the chosen range, in epoch milliseconds (UTC): a day, the 7 days through
// the chosen day, or the chosen day's month from its first day through the chosen day.
function trendHours(range, day) {
  const end = Date.parse(`${day}T00:00:00Z`) + DAY_MS;
  if (range === "day") {
    return { start: end - DAY_MS, end };
  }
  if (range === "week") {
    return { start: end - 7 * DAY_MS, end };
  }
  return { start: Date.parse(`${day.slice(0, 7)}-01T00:00:00Z`), end };
}

function hourParameter(milliseconds) {
  return new Date(milliseconds).toISOString().slice(0, 13);
}

// One tag set's name: its org and its values of the group-by keys.
function seriesLabel(record, breakdown) {
  if (!breakdown.length) {
    return record.org_name;
  }
  const values = breakdown.map((key) => (record.tags === null ? "—" : (record.tags[key] || [""])[0]));
  return `${record.org_name}: ${values.join(", ")}`;
}

// Every hourly record of the range, following next_record_id to the last page.
async function fetchHours(hours, usageType, breakdown) {
  const parameters = new URLSearchParams({
    start_hr: hourParameter(hours.start),
    end_hr: hourParameter(hours.end),
    usage_type: usageType,
  });
  if (breakdown.length) {
    parameters.set("tag_breakdown_keys", breakdown.join(","));
  }
  const records = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const pageParameters = new URLSearchParams(parameters);
    if (cursor) {
      pageParameters.set("next_record_id", cursor);
    }
    const answer = await getJson(`${HOURLY_PATH}?${pageParameters}`, state.keys);
    records.push(...answer.usage);
    cursor = answer.metadata.pagination.next_record_id;
    if (!cursor) {
      return records;
    }
  }
  throw new Error(`more than ${MAX_PAGES} pages: narrow the range or the tag keys`);
}

// The series to draw: the top N tag sets by their total over the range (ties by name), and for
// additive types the rest summed as "other"; distinct counts of the rest are left out, not added.
function trendSeries(records, breakdown, hourCount, start, top, additive) {
  const byLabel = new Map();
  for (const record of records) {
    const label = seriesLabel(record, breakdown);
    if (!byLabel.has(label)) {
      byLabel.set(label, new Array(hourCount).fill(0));
    }
    const index = Math.round((Date.parse(record.hour) - start) / HOUR_MS);
    if (index >= 0 && index < hourCount) {
      byLabel.get(label)[index] += record.total_usage_sum;
    }
  }
  const ranked = Array.from(byLabel, ([label, values]) => ({
    label,
    values,
    total: values.reduce((sum, value) => sum + value, 0),
  })).sort((a, b) => b.total - a.total || a.label.localeCompare(b.label));
  const shown = ranked.slice(0, top).map((series, index) => ({
    ...series,
    colour: SERIES_COLOURS[index % SERIES_COLOURS.length],
  }));
  const rest = ranked.slice(top);
  if (additive && rest.length) {
    const values = new Array(hourCount).fill(0);
    for (const series of rest) {
      series.values.forEach((value, index) => {
        values[index] += value;
      });
    }
    const total = values.reduce((sum, value) => sum + value, 0);
    shown.push({ label: OTHER_LABEL, values, total, colour: OTHER_COLOUR, other: rest.length });
  }
  return { shown, leftOut: additive ? 0 : rest.length, tagSets: ranked.length };
}

function svgElement(name, attributes, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [attribute, value] of Object.entries(attributes)) {
    node.setAttribute(attribute, String(value));
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

// Round the top of the value axis up to 1, 2 or 5 times a power of ten.
function axisTop(maximum) {
  if (maximum <= 0) {
    return 1;
  }
  const magnitude = 10 ** Math.floor(Math.log10(maximum));
  return [1, 2, 5, 10].map((step) => step * magnitude).find((candidate) => candidate >= maximum);
}

function hourText(milliseconds) {
  return new Date(milliseconds).toISOString().slice(0, 16).replace("T", " ");
}

// A bar's or a point's tooltip: its tag set, hour and value.
function markTitle(series, hour, value) {
  return svgElement("title", {}, `${series.label}, ${hourText(hour)}: ${numberFormat.format(value)}`);
}

function drawChart(svg, trend) {
  const { shown, hours, hourCount, additive, usageName } = trend;
  const plotWidth = CHART.width - CHART.left - CHART.right;
  const plotHeight = CHART.height - CHART.top - CHART.bottom;
  const slot = plotWidth / hourCount;
  const heights = new Array(hourCount).fill(0);
  for (const series of shown) {
    series.values.forEach((value, index) => {
      heights[index] = additive ? heights[index] + value : Math.max(heights[index], value);
    });
  }
  const top = axisTop(Math.max(0, ...heights));
  const y = (value) => CHART.top + plotHeight - (value / top) * plotHeight;
  const x = (index) => CHART.left + index * slot;
  svg.setAttribute("viewBox", `0 0 ${CHART.width} ${CHART.height}`);
  const parts = [];
  for (let tick = 0; tick <= 4; tick++) {
    const value = (top * tick) / 4;
    const level = y(value);
    parts.push(svgElement("line", { class: "grid", x1: CHART.left, x2: CHART.left + plotWidth, y1: level, y2: level }));
    const tickText = numberFormat.format(value);
    parts.push(svgElement("text", { x: CHART.left - 6, y: level + 4, "text-anchor": "end" }, tickText));
  }
  // Hour ticks: every 3 hours over a day, else at midnight every day or every few days.
  const step = hourCount <= 24 ? 3 : 24 * Math.max(1, Math.ceil(hourCount / 24 / 10));
  const bottom = CHART.top + plotHeight;
  for (let index = 0; index <= hourCount; index += step) {
    const moment = hours.start + index * HOUR_MS;
    const label = hourCount <= 24 ? hourText(moment).slice(11) : hourText(moment).slice(5, 10);
    parts.push(svgElement("line", { class: "axis", x1: x(index), x2: x(index), y1: bottom, y2: bottom + 4 }));
    parts.push(svgElement("text", { x: x(index), y: bottom + 17, "text-anchor": "middle" }, label));
  }
  parts.push(svgElement("line", { class: "axis", x1: CHART.left, x2: CHART.left + plotWidth, y1: bottom, y2: bottom }));
  parts.push(svgElement("line", { class: "axis", x1: CHART.left, x2: CHART.left, y1: CHART.top, y2: bottom }));
  const xLabel = { class: "axis-label", x: CHART.left + plotWidth / 2, y: CHART.height - 8, "text-anchor": "middle" };
  parts.push(svgElement("text", xLabel, "Hour (UTC)"));
  const middleHeight = CHART.top + plotHeight / 2;
  const yLabel = { class: "axis-label", x: 14, y: middleHeight, "text-anchor": "middle" };
  yLabel.transform = `rotate(-90 14 ${middleHeight})`;
  parts.push(svgElement("text", yLabel, `${usageName} per hour`));
  const base = new Array(hourCount).fill(0);
  for (const series of shown) {
    const group = svgElement("g", { "data-series": series.label, fill: series.colour, stroke: series.colour });
    group.append(svgElement("title", {}, `${series.label}: ${numberFormat.format(series.total)} over the range`));
    if (additive) {
      series.values.forEach((value, index) => {
        if (value > 0) {
          const rect = svgElement("rect", {
            x: x(index) + slot * 0.1,
            y: y(base[index] + value),
            width: Math.max(slot * 0.8, 0.5),
            height: y(base[index]) - y(base[index] + value),
            stroke: "none",
            "data-hour": new Date(hours.start + index * HOUR_MS).toISOString(),
            "data-value": value,
          });
          rect.append(markTitle(series, hours.start + index * HOUR_MS, value));
          group.append(rect);
          base[index] += value;
        }
      });
    } else {
      const middle = (index) => x(index) + slot / 2;
      const path = series.values.map(
        (value, index) => `${index ? "L" : "M"}${middle(index).toFixed(2)},${y(value).toFixed(2)}`,
      );
      group.append(svgElement("path", { d: path.join(" "), fill: "none", "stroke-width": 2 }));
      series.values.forEach((value, index) => {
        if (value > 0) {
          const point = svgElement("circle", {
            cx: middle(index),
            cy: y(value),
            r: 3,
            "data-hour": new Date(hours.start + index * HOUR_MS).toISOString(),
            "data-value": value,
          });
          point.append(markTitle(series, hours.start + index * HOUR_MS, value));
          group.append(point);
        }
      });
    }
    parts.push(group);
  }
  svg.replaceChildren(...parts);
}

function renderLegend(trend) {
  const items = trend.shown.map((series) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = trend.additive ? "swatch" : "swatch line";
    swatch.style.background = series.colour;
    swatch.setAttribute("aria-hidden", "true");
    const others = `${series.other} more tag ${series.other === 1 ? "set" : "sets"}`;
    const name = series.other ? `other (${others})` : series.label;
    item.append(swatch, `${name}: ${numberFormat.format(series.total)}`);
    item.dataset.series = series.label;
    return item;
  });
  element("trend-legend").replaceChildren(...items);
  const totalsWord = trend.additive ? "total over the range" : "sum of the hourly counts";
  let note = trend.additive
    ? `Stacked: each bar is the hour's ${trend.usageName.toLowerCase()}, by tag set (legend: ${totalsWord}).`
    : "Distinct counts do not add across tag sets (one session or host can be in several): one line " +
      `per tag set, not stacked (legend: ${totalsWord}).`;
  if (trend.leftOut) {
    note +=
      ` ${trend.leftOut} more tag ${trend.leftOut === 1 ? "set is" : "sets are"} not drawn: ` +
      'their distinct counts cannot be summed into "other".';
  }
  element("trend-note").textContent = note;
}

// The same numbers as the chart, for screen readers: one row per hour with usage, a column per series.
function renderTrendTable(trend) {
  const table = element("trend-table");
  const headerRow = document.createElement("tr");
  for (const label of ["Hour (UTC)", ...trend.shown.map((series) => series.label)]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    headerRow.append(th);
  }
  table.querySelector("thead").replaceChildren(headerRow);
  const rows = [];
  for (let index = 0; index < trend.hourCount; index++) {
    if (!trend.shown.some((series) => series.values[index] > 0)) {
      continue;
    }
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = hourText(trend.hours.start + index * HOUR_MS);
    tr.append(th);
    for (const series of trend.shown) {
      const td = document.createElement("td");
      td.textContent = numberFormat.format(series.values[index]);
      td.dataset.value = String(series.values[index]);
      tr.append(td);
    }
    rows.push(tr);
  }
  table.querySelector("tbody").replaceChildren(...rows);
  element("trend-table-caption").textContent =
    `${trend.usageName} per hour by tag set (hours without usage left out)`;
}

function trendSummary(trend) {
  const from = hourText(trend.hours.start);
  const to = hourText(trend.hours.end);
  const kind = trend.additive ? "stacked bar chart" : "line chart";
  const series = trend.shown.map((one) => `${one.label} ${numberFormat.format(one.total)}`).join("; ");
  return `${kind} of ${trend.usageName} per hour from ${from} to ${to} UTC, ${trend.shown.length} series` +
    (series ? `: ${series}` : "");
}

async function onShowTrend(event) {
  event.preventDefault();
  const day = element("trend-date").value;
  const top = Number(element("trend-top").value);
  const usageType = element("trend-type").value;
  element("trends-error").textContent = "";
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) {
    element("trends-error").textContent = "Choose a day.";
    return;
  }
  if (!Number.isInteger(top) || top < 1 || top > 12) {
    element("trends-error").textContent = "Top tag sets: a whole number from 1 to 12.";
    return;
  }
  const hours = trendHours(element("trend-range").value, day);
  const hourCount = Math.round((hours.end - hours.start) / HOUR_MS);
  const breakdown = breakdownKeys();
  const additive = !DISTINCT_TYPES.has(usageType);
  element("trends-status").textContent = "Loading…";
  try {
    const records = await fetchHours(hours, usageType, breakdown);
    const { shown, leftOut, tagSets } = trendSeries(records, breakdown, hourCount, hours.start, top, additive);
    const trend = { shown, leftOut, hours, hourCount, additive, usageName: USAGE_TYPE_NAMES[usageType] };
    const svg = element("trend-chart");
    drawChart(svg, trend);
    svg.setAttribute("aria-label", trendSummary(trend));
    renderLegend(trend);
    renderTrendTable(trend);
    element("trend-figure").hidden = false;
    element("trends-status").textContent =
      `${tagSets} tag ${tagSets === 1 ? "set" : "sets"}` + (tagSets ? "" : ": no usage recorded in this range");
  } catch (error) {
    showFailure("trends", error);
  }
}

// --- editing the org's tags ------------------------------------------------------------------------

function overridesHeaders() {
  return { "X-Scope-OrgID": state.org.org_id, Accept: "application/json" };
}

function dimensionLines(overrides) {
  const dimensions = (overrides.cost_attribution || {}).dimensions;
  if (Array.isArray(dimensions)) {
    return dimensions.join("\n");
  }
  return Object.entries(dimensions || {})
    .map(([attribute, tag]) => (tag ? `${attribute} = ${tag}` : attribute))
    .join("\n");
}

function parseDimensions(text) {
  const dimensions = {};
  for (const [index, line] of text.split("\n").entries()) {
    if (!line.trim()) {
      continue;
    }
    const separator = line.indexOf("=");
    const attribute = (separator < 0 ? line : line.slice(0, separator)).trim();
    const tag = separator < 0 ? "" : line.slice(separator + 1).trim();
    if (!attribute) {
      throw new Error(`line ${index + 1}: the attribute is missing`);
    }
    dimensions[attribute] = tag;
  }
  return dimensions;
}

async function loadTags() {
  element("tags-error").textContent = "";
  element("tags-status").textContent = "Loading tags…";
  const response = await fetch(OVERRIDES_PATH, { headers: overridesHeaders(), credentials: "omit", cache: "no-store" });
  if (response.ok) {
    state.tagsEtag = response.headers.get("ETag");
    element("dimensions").value = dimensionLines(await response.json());
    element("tags-status").textContent = "Tags loaded.";
    return;
  }
  const text = await errorText(response);
  if (response.status === 404 && !text.includes("disabled")) {
    state.tagsEtag = null;
    element("dimensions").value = "";
    element("tags-status").textContent = "No tags of your own yet: the operator's defaults apply. Saving sets yours.";
    return;
  }
  element("tags-status").textContent = "";
  element("tags-error").textContent = text;
}

async function onSaveTags(event) {
  event.preventDefault();
  element("tags-error").textContent = "";
  let dimensions;
  try {
    dimensions = parseDimensions(element("dimensions").value);
  } catch (error) {
    element("tags-error").textContent = error.message;
    return;
  }
  const headers = { ...overridesHeaders(), "Content-Type": "application/json" };
  if (state.tagsEtag) {
    headers["If-Match"] = state.tagsEtag;
  }
  element("tags-status").textContent = "Saving…";
  const response = await fetch(OVERRIDES_PATH, {
    method: "POST",
    headers,
    body: JSON.stringify({ cost_attribution: { dimensions } }),
    credentials: "omit",
  });
  if (response.ok) {
    state.tagsEtag = response.headers.get("ETag");
    element("dimensions").value = dimensionLines(await response.json());
    element("tags-status").textContent = "Saved: usage received from now on is attributed by these tags.";
    return;
  }
  element("tags-status").textContent = "";
  if (response.status === 412 || response.status === 428) {
    element("tags-error").textContent =
      "Not saved: the tags were changed by someone else since you loaded them, and nothing was " +
      "overwritten. Reload to see their version, then make your change again.";
    return;
  }
  element("tags-error").textContent = `Not saved. ${await errorText(response)}`;
}

// --- wiring ----------------------------------------------------------------------------------------

function start() {
  element("month").value = new Date().toISOString().slice(0, 7);
  element("trend-date").value = new Date().toISOString().slice(0, 10);
  element("sign-in-form").addEventListener("submit", onSignIn);
  element("sign-out").addEventListener("click", () => signOut("Signed out."));
  element("monthly-form").addEventListener("submit", onShowUsage);
  for (const radio of document.querySelectorAll('input[name="show-as"]')) {
    radio.addEventListener("change", () => state.shown && renderTable());
  }
  element("download-csv").addEventListener("click", downloadCsv);
  element("trends-form").addEventListener("submit", onShowTrend);
  element("tags-form").addEventListener("submit", onSaveTags);
  element("reload-tags").addEventListener("click", () =>
    loadTags().catch((error) => {
      element("tags-error").textContent = error.message;
    }),
  );
  const stored = sessionStorage.getItem(KEYS_STORAGE);
  if (stored) {
    signIn(JSON.parse(stored)).catch((error) => signOut(`Signed out: ${error.message}`));
  } else {
    element("api-key").focus();
  }
}

start();
