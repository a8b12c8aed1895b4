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

function commonOptions() {
  return {
    collection: $("collection").value,
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
  });
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
    return callApi("v1/search/image", { method: "POST", body: form });
  });
}

async function run(request) {
  clearError();
  $("status").textContent = "Searching…";
  try {
    render(await request());
  } catch (e) {
    $("results").replaceChildren();
    showError(e.message);
  }
}

function render(result) {
  const took = result.took_ms.total_ms.toFixed(1);
  $("status").textContent = `${result.hits.length} results in ${took} ms`;
  $("results").replaceChildren(...result.hits.map(card));
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
