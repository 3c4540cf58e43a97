// Talks to the gateway's app API with the signed-in account's bearer token. The session (access
// and refresh token) lives in this tab's sessionStorage only; a 401 triggers one refresh.

const KEY = "langerhans.session";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
  // The route does not exist (yet) on this gateway, or the service behind it is not reachable:
  // the UI then says "unavailable" instead of showing a number.
  get unavailable() {
    return (this.status === 404 && this.code === "http_error") || this.status === 405 ||
      this.status === 501 || this.status === 502 || this.status === 503 || this.status === 504;
  }
}

export function currentSession() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

function store(session) {
  if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON */
  }
  const err = body && body.error && typeof body.error === "object" ? body.error : {};
  const message = err.message || (body && body.error_description) || response.statusText ||
    `HTTP ${response.status}`;
  return new ApiError(response.status, err.code || "http_error", message, err.details);
}

export async function signIn(email, password) {
  const response = await fetch("/api/v1/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (!response.ok) throw await errorOf(response);
  const tokens = await response.json();
  store({ access: tokens.access_token, refresh: tokens.refresh_token });
  const me = await api("/api/v1/me");
  store({ ...currentSession(), me });
  return me;
}

async function refresh() {
  const session = currentSession();
  if (!session) return false;
  const response = await fetch("/api/v1/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refresh }),
  });
  if (!response.ok) {
    store(null);
    return false;
  }
  const tokens = await response.json();
  store({ ...session, access: tokens.access_token, refresh: tokens.refresh_token });
  return true;
}

let refreshing = null;

// fetch with the bearer token; `as`: "json" (default), "blob" or "response".
export async function api(path, { method = "GET", body, as = "json" } = {}) {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const session = currentSession();
    if (!session) throw new ApiError(401, "unauthenticated", "Please sign in.");
    const headers = { Authorization: `Bearer ${session.access}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (response.status === 401 && attempt === 0) {
      // One refresh shared by every request that failed at the same moment (refresh tokens
      // rotate: two parallel refreshes would revoke the session).
      refreshing = refreshing || refresh().finally(() => { refreshing = null; });
      if (await refreshing) continue;
    }
    if (!response.ok) throw await errorOf(response);
    if (as === "response") return response;
    if (as === "blob") return response.blob();
    if (response.status === 204) return null;
    return response.json();
  }
  throw new ApiError(401, "unauthenticated", "Your session ended. Please sign in again.");
}

// Like api(), but a missing or unreachable backend gives {unavailable: reason} instead of throwing.
export async function optional(path, options) {
  try {
    return { data: await api(path, options) };
  } catch (e) {
    if (e instanceof ApiError && e.unavailable) return { unavailable: e.message };
    throw e;
  }
}

export async function signOut() {
  const session = currentSession();
  if (session) {
    try {
      await api("/api/v1/auth/logout", { method: "POST", body: { refresh_token: session.refresh } });
    } catch {
      /* signing out locally regardless */
    }
  }
  store(null);
}
