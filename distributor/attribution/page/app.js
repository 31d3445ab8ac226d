// The usage attribution page: the monthly table from /api/v1/usage/monthly-attribution and the org's
// attribution tags through /api/overrides. Plain JavaScript, no dependencies; the strict
// Content-Security-Policy of the page allows no inline script, so everything is wired up here.
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
  for (const id of ["monthly-status", "monthly-error", "tags-status", "tags-error", "usage-caption"]) {
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

// Every record of the month, following next_record_id to the last page.
async function fetchMonth(month, breakdown, types) {
  const parameters = new URLSearchParams({
    start_month: month,
    end_month: month,
    fields: types.flatMap((type) => [type, percentageField(type)]).join(","),
  });
  if (breakdown.length) {
    parameters.set("tag_breakdown_keys", breakdown.join(","));
  }
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
    const { records, updatedAt } = await fetchMonth(month, breakdown, types);
    state.shown = { month, breakdown, types, records, updatedAt };
    state.sort = null;
    renderTable();
  } catch (error) {
    element("monthly-status").textContent = "";
    element("monthly-error").textContent = error.message;
    if (error.message.includes("[HTTP 403]")) {
      signOut(`Signed out: ${error.message}`);
    }
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
  const rows = sortedRecords(shownColumns).map((record) => shownColumns.map((column) => cellValue(record, column)));
  const totals = shownColumns.map((column, index) =>
    column.numeric ? rows.reduce((sum, row) => sum + row[index], 0) : index === 0 ? "Total" : "",
  );
  return { shownColumns, header, rows, totals };
}

function renderTable() {
  const table = element("usage-table");
  const { shownColumns, rows, totals } = shownRows();
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
  const body = rows.map((values) => {
    const tr = document.createElement("tr");
    values.forEach((value, index) => {
      const numeric = shownColumns[index].numeric;
      tr.append(cell(index === 0 ? "th" : "td", value, numeric));
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
  element("monthly-status").textContent =
    `${rows.length} ${rows.length === 1 ? "row" : "rows"}` + (rows.length ? "" : ": no usage recorded for this month");
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
  let text = value === null ? "" : String(value);
  if (/^[=+\-@\t\r]/.test(text)) {
    text = "'" + text;
  }
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
  element("sign-in-form").addEventListener("submit", onSignIn);
  element("sign-out").addEventListener("click", () => signOut("Signed out."));
  element("monthly-form").addEventListener("submit", onShowUsage);
  for (const radio of document.querySelectorAll('input[name="show-as"]')) {
    radio.addEventListener("change", () => state.shown && renderTable());
  }
  element("download-csv").addEventListener("click", downloadCsv);
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
