// The API client: same-origin fetches to /api/operator/*, the session cookie sent by the
// browser (HttpOnly, SameSite=Strict), and the CSRF token kept in this module's memory only
// (never in Web Storage, where any script could read it): after a reload it comes back from
// GET /api/operator/session.

let csrf = null;

/** An API answer that is not 2xx: `status` and the problem+json `detail` when there is one. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

async function parse(response) {
  const type = response.headers.get("content-type") || "";
  if (response.status === 204) return null;
  if (type.includes("json")) return response.json();
  return null;
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "the API is unreachable");
  }
  const data = await parse(response).catch(() => null);
  if (response.status === 401 && path !== "/api/operator/session") {
    csrf = null;
    // the session expired or was logged out elsewhere: the shell shows the sign-in form
    window.dispatchEvent(new CustomEvent("spectral:session-ended"));
  }
  if (!response.ok) {
    const detail = data && (data.detail || data.title);
    throw new ApiError(response.status, detail);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body = {}) => call("POST", path, body);

/** The session of this browser, or null when it has none (401). */
export async function session() {
  try {
    const s = await get("/api/operator/session");
    if (s && s.csrf) csrf = s.csrf;
    return s;
  } catch (err) {
    if (err.status === 401) return null;
    throw err;
  }
}

/** Exchange an operator key for a session cookie; the key itself is not kept. */
export async function login(token) {
  const s = await call("POST", "/api/operator/session", { token });
  csrf = s.csrf;
  return s;
}

export async function logout() {
  try {
    await post("/api/operator/session/logout");
  } finally {
    csrf = null;
  }
}

/** A query string from an object, skipping null / undefined / "" values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
