// Shared by both pages: the API client, the API key, feature checks and a safe DOM builder.
// Every string from the API reaches the page as text (textContent, text nodes, attribute
// values), never as markup.

/** The API's root: the pages live at <root>/ui/ and <root>/ui/admin. */
export const API_BASE = new URL("../", document.baseURI);

const KEY_STORE = "tastebud.apiKey";

export function getKey() {
  try {
    return localStorage.getItem(KEY_STORE) || "";
  } catch {
    return "";
  }
}

export function setKey(value) {
  try {
    if (value) localStorage.setItem(KEY_STORE, value);
    else localStorage.removeItem(KEY_STORE);
  } catch {
    // storage refused (private mode): the key lasts until the page is left
  }
  memoryKey = value;
}

let memoryKey = null;

function currentKey() {
  return memoryKey !== null ? memoryKey : getKey();
}

/** An answer of 4xx/5xx: `type` and `message` from the API's {"error": {...}} body. */
export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
  }
}

// How many requests are in flight, on <html data-pending="N"> (tests wait for "0").
let pending = 0;
function busy(delta) {
  pending += delta;
  document.documentElement.dataset.pending = String(pending);
}
busy(0);

/**
 * Call the API: `path` is relative to the API root ("users", not "/users").
 * Resolves to the parsed JSON (or null); rejects with ApiError.
 */
export async function api(method, path, { query, body } = {}) {
  const url = new URL(path, API_BASE);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") {
      url.searchParams.set(name, String(value));
    }
  }
  const headers = { Accept: "application/json" };
  const key = currentKey();
  if (key) headers["X-API-Key"] = key;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  busy(+1);
  try {
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new ApiError(0, "network", `the server does not answer (${err.message})`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data && typeof data === "object" ? data.error : null;
      const message =
        error && typeof error.message === "string"
          ? error.message
          : `${response.status} ${response.statusText}`.trim();
      throw new ApiError(response.status, (error && error.type) || "http_error", message);
    }
    return data;
  } finally {
    busy(-1);
  }
}

/** One path segment, escaped ("a b/c" -> "a%20b%2Fc"). */
export const seg = (id) => encodeURIComponent(String(id));

// -- feature checks from the OpenAPI document ------------------------------------------------
class Features {
  constructor(spec) {
    this.spec = spec && typeof spec === "object" && spec.paths ? spec : null;
  }

  /** true/false when the server says, null when it cannot be told (no OpenAPI document). */
  has(method, path) {
    if (!this.spec) return null;
    return Boolean(this.operation(method, path));
  }

  /** The operation for `method path`; "{...}" matches any parameter name. */
  operation(method, path) {
    const shape = (p) => p.replace(/\{[^}]*\}/g, "{}");
    const want = shape(path);
    for (const [candidate, entry] of Object.entries(this.spec.paths)) {
      if (shape(candidate) === want && entry && entry[method.toLowerCase()]) {
        return entry[method.toLowerCase()];
      }
    }
    return null;
  }

  /** Whether the JSON body of `method path` has a field `name` (false when unknown). */
  bodyField(method, path, name) {
    if (!this.spec) return false;
    const op = this.operation(method, path);
    let schema = op?.requestBody?.content?.["application/json"]?.schema;
    for (let depth = 0; schema && depth < 5; depth++) {
      if (schema.$ref) {
        const name = schema.$ref.split("/").pop();
        schema = this.spec.components?.schemas?.[name];
      } else if (Array.isArray(schema.anyOf) || Array.isArray(schema.allOf)) {
        schema = (schema.anyOf || schema.allOf).find((s) => s.$ref || s.properties);
      } else {
        break;
      }
    }
    return Boolean(schema && schema.properties && name in schema.properties);
  }
}

let featuresPromise = null;

/** What this server offers, read once from its OpenAPI document. */
export function features() {
  if (!featuresPromise) {
    featuresPromise = api("GET", "openapi.json")
      .then((spec) => new Features(spec))
      .catch(() => new Features(null));
  }
  return featuresPromise;
}

// -- DOM -------------------------------------------------------------------------------------
/**
 * A new element: `attrs` are attributes (values set as text; `testid` -> data-testid;
 * functions under on* names become listeners), `children` are nodes or strings (as text).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "testid") {
      node.dataset.testid = String(value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace the children of `node` (by id or element) with `children`. */
export function fill(node, ...children) {
  const target = typeof node === "string" ? document.getElementById(node) : node;
  target.replaceChildren();
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    target.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return target;
}

export function fmtNumber(value, digits = 3) {
  if (typeof value !== "number" || !Number.isFinite(value)) return value == null ? "—" : String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return value.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** A timestamp (unix seconds, or an ISO string) as local date and time. */
export function fmtTime(value) {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(String(value));
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString("en-GB", { dateStyle: "short", timeStyle: "medium" });
}

// -- messages --------------------------------------------------------------------------------
/** Show an error in the page's alert line (ApiError: its message as the API gave it). */
export function showError(err, context = "") {
  const box = document.getElementById("error");
  let text;
  if (typeof err === "string") {
    text = err;
  } else if (err instanceof ApiError) {
    text = err.message;
  } else {
    // not an API answer: a bug in these pages; say so in the console too
    console.error(err);
    text = `unexpected error: ${err && err.message ? err.message : err}`;
  }
  box.textContent = context ? `${context}: ${text}` : text;
  box.hidden = false;
}

export function clearError() {
  const box = document.getElementById("error");
  box.textContent = "";
  box.hidden = true;
}

/** A short-lived note in the status line. */
export function say(text) {
  const box = document.getElementById("status");
  box.textContent = text;
}

/** Run `fn`, showing any error it throws; returns its result (undefined on error). */
export async function guarded(context, fn) {
  try {
    const result = await fn();
    return result;
  } catch (err) {
    showError(err, context);
    return undefined;
  }
}

/** Disable `buttons` while `fn` runs (no double posts). */
export async function withDisabled(buttons, fn) {
  const list = Array.isArray(buttons) ? buttons : [buttons];
  for (const b of list) b.disabled = true;
  try {
    return await fn();
  } finally {
    for (const b of list) b.disabled = false;
  }
}

// -- the API key form in the header ----------------------------------------------------------
/** Wire the key form; `onChange` runs after a new key is saved. */
export function setupKeyForm(onChange) {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const state = document.getElementById("key-state");
  const show = () => {
    state.textContent = currentKey() ? "key set" : "no key";
  };
  input.value = currentKey();
  show();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setKey(input.value.trim());
    show();
    clearError();
    say(input.value.trim() ? "API key saved in this browser" : "API key removed");
    onChange();
  });
}
