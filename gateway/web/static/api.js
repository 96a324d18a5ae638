// The /v1 JSON API, called with the API key the user typed. The key lives in this tab's
// sessionStorage and travels only in the Authorization header: never in a URL or a cookie.

const KEY = "igw.key";
const COLLABORATION = "igw.collaboration";
const LAST_COLLABORATION = "igw.last-collaboration"; // not a secret: prefills the sign-in form

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  get collaboration() {
    return sessionStorage.getItem(COLLABORATION);
  },
  get lastCollaboration() {
    return localStorage.getItem(LAST_COLLABORATION) || "";
  },
  open(key, collaboration) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(COLLABORATION, collaboration);
    localStorage.setItem(LAST_COLLABORATION, collaboration);
  },
  close() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(COLLABORATION);
  },
};

/**
 * Call the gateway. `body` is sent as JSON unless `contentType` says otherwise.
 * Resolves to the parsed JSON answer; rejects with ApiError carrying the error code.
 */
export async function api(method, path, { body, contentType } = {}) {
  const headers = { Authorization: `Bearer ${session.key || ""}` };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType || "application/json";
    payload = contentType ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: payload,
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "unreachable", "the gateway did not answer");
  }
  const isJson = (response.headers.get("content-type") || "").includes("json");
  const answer = isJson ? await response.json() : await response.text();
  if (!response.ok) {
    const error = isJson && answer && answer.error ? answer.error : {};
    throw new ApiError(response.status, error.code || "error", error.message || `HTTP ${response.status}`);
  }
  return answer;
}

/** The path of a collaboration resource: collab("/policy") → /v1/collaborations/<c>/policy. */
export function collab(rest = "") {
  return `/v1/collaborations/${encodeURIComponent(session.collaboration || "")}${rest}`;
}

/** The console's own draft check (validates like a proposal, stores nothing). */
export function draftCheckPath() {
  return `/console/api/collaborations/${encodeURIComponent(session.collaboration || "")}/policy/check`;
}
