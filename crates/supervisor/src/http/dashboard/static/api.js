// The management API as the page uses it: where it lives, the admin token,
// JSON requests with errors that say what went wrong, and an SSE reader
// that can send the Authorization header (EventSource cannot).

const TOKEN_KEY = "par-admin-token";

// The page is served at <prefix>/supervisor/ui/; the API at <prefix>/...
const prefix = location.pathname.replace(/\/supervisor\/ui(\/.*)?$/, "");

export function url(path) {
  return prefix + path;
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token lasts until the page is closed anyway.
  }
}

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

/** An answer that is not a success: status, the API's code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(resp) {
  let code = "http_" + resp.status;
  let message = resp.statusText || "HTTP " + resp.status;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy in between): keep the status line.
  }
  return new ApiError(resp.status, code, message);
}

/** fetch() that turns network failures into status 0 and non-2xx into ApiError. */
export async function request(method, path, body, opts = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  if (opts.signal) init.signal = opts.signal;
  let resp;
  try {
    resp = await fetch(url(path), init);
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", "the supervisor is not reachable (" + (e && e.message ? e.message : e) + ")");
  }
  if (!resp.ok && !(opts.accept || []).includes(resp.status)) throw await errorOf(resp);
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  return { status: resp.status, data };
}

export const getJson = (path, opts) => request("GET", path, undefined, opts).then((r) => r.data);

/**
 * Reads a Server-Sent Events stream with fetch(), calling onEvent(event, data)
 * for each event. Resolves when the stream ends; rejects with ApiError on a
 * refused request. Abort with opts.signal.
 */
export async function readEvents(path, onEvent, opts = {}) {
  let resp;
  try {
    resp = await fetch(url(path), { headers: headers({ Accept: "text/event-stream" }), cache: "no-store", signal: opts.signal });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", "the supervisor is not reachable");
  }
  if (!resp.ok) throw await errorOf(resp);
  if (opts.onOpen) opts.onOpen();
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}
