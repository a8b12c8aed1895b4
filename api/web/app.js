// The search page: talks to /v1 with fetch, renders with DOM calls (never innerHTML:
// item texts and attributes are untrusted).
"use strict";

const $ = (id) => document.getElementById(id);

// "category=shoes price<=100 color=red|blue" or a JSON object -> the API's filters.
function parseFilters(text) {
  const source = text.trim();
  if (!source) return null;
  if (source.startsWith("{")) {
    try { return JSON.parse(source); } catch (e) { throw new Error("Filters: " + e.message); }
  }
  const ops = { ">=": "gte", "<=": "lte", ">": "gt", "<": "lt" };
  const filters = {};
  for (const term of source.split(/[\s,]+/)) {
    const m = term.match(/^([A-Za-z_][\w-]*)(>=|<=|>|<|=)(.+)$/);
    if (!m) throw new Error(`Filters: cannot read "${term}" (use name=value, name<=10, a|b)`);
    const [, name, op, raw] = m;
    if (op === "=") {
      const values = raw.split("|").map(scalar);
      filters[name] = values.length > 1 ? values : values[0];
    } else {
      const number = Number(raw);
      if (!Number.isFinite(number)) throw new Error(`Filters: ${name}${op} needs a number`);
      filters[name] = Object.assign(filters[name] || {}, { [ops[op]]: number });
    }
  }
  return filters;
}

function scalar(raw) {
  if (raw === "true" || raw === "false") return raw === "true";
  const number = Number(raw);
  return raw.trim() !== "" && Number.isFinite(number) ? number : raw;
}

// Every failure ends up here and on screen: problem+json detail, or what went wrong.
function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  $("status").textContent = "";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function callApi(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    throw new Error("The server cannot be reached: " + e.message);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const reason = body && (body.detail || body.title);
    throw new Error(`${reason || "Request failed"} (HTTP ${response.status})`);
  }
  return body;
}

async function loadCollections() {
  try {
    const { collections } = await callApi("v1/collections");
    const select = $("collection");
    select.replaceChildren(...collections.map((c) => {
      const option = document.createElement("option");
      option.value = c.name;
      option.textContent = `${c.name} (${c.items} items)`;
      return option;
    }));
    if (!collections.length) showError("No collections yet: index some items first.");
  } catch (e) {
    showError(e.message);
  }
}

// Facet fields per collection, learnt from the hits: attributes holding plain strings, or
// lists of them (a click on a list value filters on "contains"), where some value is shared
// by two hits (a field unique to every hit makes no useful filter).
const facetFields = {};
const MAX_FACET_FIELDS = 5;
let lastRequest = null;

function learnFacetFields(collection, hits) {
  const seen = {};
  for (const hit of hits) {
    for (const [key, value] of Object.entries(hit.attributes || {})) {
      const values = Array.isArray(value) ? value : [value];
      if (!values.length || !values.every((v) => typeof v === "string")) continue;
      const field = (seen[key] = seen[key] || { values: new Set(), shared: false });
      for (const v of new Set(values)) {
        if (field.values.has(v)) field.shared = true;
        field.values.add(v);
      }
    }
  }
  const fields = Object.keys(seen)
    .filter((key) => hits.length < 5 || seen[key].shared)
    .slice(0, MAX_FACET_FIELDS);
  const known = facetFields[collection] || [];
  const fresh = fields.some((f) => !known.includes(f));
  if (fresh) facetFields[collection] = [...new Set([...known, ...fields])].slice(0, MAX_FACET_FIELDS);
  return fresh;
}

function selectedMode() {
  const checked = document.querySelector("input[name='mode']:checked");
  return checked ? checked.value : "hybrid";
}

function commonOptions() {
  const facets = facetFields[$("collection").value];
  return {
    collection: $("collection").value,
    mode: selectedMode(),
    facets: facets && facets.length ? facets : undefined,
    target: $("target").value,
    k: Math.min(1000, Math.max(1, parseInt($("k").value, 10) || 24)),
    filters: parseFilters($("filters").value),
    include_generated: $("include-generated").checked,
  };
}

async function searchText(event) {
  event.preventDefault();
  const text = $("query").value.trim();
  if (!text) return;
  await run(() => {
    const body = { ...commonOptions(), text };
    if (!body.filters) delete body.filters;
    return callApi("v1/search", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }, () => searchText(event));
}

async function searchImage(file) {
  if (!file) return;
  const preview = $("image-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  await run(() => {
    const options = commonOptions();
    const form = new FormData();
    form.append("image", file);
    form.append("collection", options.collection);
    form.append("target", options.target);
    form.append("k", String(options.k));
    form.append("include_generated", String(options.include_generated));
    if (options.filters) form.append("filters", JSON.stringify(options.filters));
    if (options.facets) form.append("facets", JSON.stringify(options.facets));
    // An image is searched by vector; with no text a keyword mode has nothing to read.
    if (options.mode !== "keyword") form.append("mode", options.mode);
    return callApi("v1/search/image", { method: "POST", body: form });
  }, () => searchImage(file));
}

// `again` repeats the search after a click in the facet sidebar.
async function run(request, again) {
  clearError();
  $("status").textContent = "Searching…";
  lastRequest = again;
  try {
    const result = await request();
    render(result);
    if (learnFacetFields($("collection").value, result.hits) && again) refreshFacets();
  } catch (e) {
    $("results").replaceChildren();
    $("facets").hidden = true;
    showError(e.message);
  }
}

function render(result) {
  const took = result.took_ms.total_ms.toFixed(1);
  const mode = result.mode ? ` (${result.mode})` : "";
  $("status").textContent = `${result.hits.length} results in ${took} ms${mode}`;
  $("results").replaceChildren(...result.hits.map(card));
  renderFacets(result);
}

// Fields were just learnt from this answer: fetch their counts for the same query
// (one hit is enough) and show only the sidebar; results and status stay as they are.
async function refreshFacets() {
  const text = $("query").value.trim();
  if (!text || !facetFields[$("collection").value]) return;
  try {
    const body = { ...commonOptions(), text, k: 1 };
    if (!body.filters) delete body.filters;
    renderFacets(await callApi("v1/search", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }));
  } catch (e) {
    $("facets").hidden = true;
  }
}

function currentFilters() {
  try { return parseFilters($("filters").value) || {}; } catch (e) { return {}; }
}

// A click on a value filters on it (written back as JSON: values may hold spaces);
// a click on the active value removes the filter.
function toggleFilter(field, value) {
  const filters = currentFilters();
  if (filters[field] === value) delete filters[field]; else filters[field] = value;
  $("filters").value = Object.keys(filters).length ? JSON.stringify(filters) : "";
  if (lastRequest) lastRequest();
}

function renderFacets(result) {
  const box = $("facets");
  const facets = (result.facets || []).filter((f) => f.buckets.length);
  box.hidden = !facets.length;
  if (!facets.length) { box.replaceChildren(); return; }
  const scope = result.facet_scope === "matches" ? "counted over every match"
                                                 : "counted over the top candidates";
  const filters = currentFilters();
  const sections = [element("p", "scope", scope)];
  for (const facet of facets) {
    const list = element("ul");
    list.dataset.field = facet.field;
    for (const bucket of facet.buckets) {
      const button = element("button", "facet-value");
      button.type = "button";
      button.dataset.value = String(bucket.value);
      button.append(element("span", "value", String(bucket.value)),
                    element("span", "count", String(bucket.count)));
      if (filters[facet.field] === bucket.value) button.classList.add("active");
      button.addEventListener("click", () => toggleFilter(facet.field, bucket.value));
      const entry = element("li");
      entry.append(button);
      list.append(entry);
    }
    sections.push(element("h2", null, facet.field), list);
  }
  box.replaceChildren(...sections);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function card(hit) {
  const item = element("li", "hit");
  item.dataset.externalId = hit.external_id;
  if (hit.thumbnail_url) {
    const img = element("img", "thumb");
    img.src = hit.thumbnail_url;
    img.alt = hit.text || hit.external_id;
    img.loading = "lazy";
    item.append(img);
  } else {
    item.append(element("div", "thumb placeholder", "no image"));
  }
  const meta = element("div", "meta");
  meta.append(element("span", "score", hit.score.toFixed(3)),
              element("span", "badge modality", hit.modality));
  if (hit.generated) meta.append(element("span", "badge generated", "generated"));
  for (const [name, ranked] of Object.entries(hit.rankers || {})) {
    meta.append(element("span", "badge ranker", `${name} #${ranked.rank}`));
  }
  item.append(meta, element("div", "external-id", hit.external_id));
  if (hit.text) item.append(element("p", "text", hit.text));
  const attributes = Object.entries(hit.attributes || {});
  if (attributes.length) {
    item.append(element("p", "attributes",
                        attributes.map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(" · ")));
  }
  return item;
}

function setupDropzone() {
  const zone = $("dropzone");
  const input = $("image-input");
  input.addEventListener("change", () => searchImage(input.files[0]));
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter") input.click(); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    searchImage(e.dataTransfer.files[0]);
  });
}

window.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", searchText);
  setupDropzone();
  loadCollections();
});
