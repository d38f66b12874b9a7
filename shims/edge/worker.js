// spectral edge shim: a thin Cloudflare Worker (module syntax) in front of spectral-api.
//
// Every request is proxied to env.ORIGIN_URL with the same method, path, query, body and
// end-to-end headers. The worker adds X-Forwarded-For/-Proto/-Host and an X-Request-Id
// (echoed on the response), strips hop-by-hop headers in both directions, never caches
// (so /health is always the origin's live answer), and turns an unreachable origin into a
// 502 and a slow one into a 504, as application/problem+json that never names the origin.
//
// Bindings (wrangler.toml [vars] or `wrangler secret put`):
//   ORIGIN_URL         required, e.g. https://api-origin.example.com (may carry a base path)
//   ORIGIN_TIMEOUT_MS  optional, default 30000: budget for the whole origin exchange

export const DEFAULT_TIMEOUT_MS = 30000;

/** RFC 9110 §7.6.1 hop-by-hop fields, plus the legacy ones proxies still see. */
export const HOP_BY_HOP = Object.freeze([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** An incoming X-Request-Id is kept only if it looks like an id (no injection into logs). */
const REQUEST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

const PROBLEM = "application/problem+json";

/** A copy of `headers` without hop-by-hop fields, including those named in Connection. */
export function stripHopByHop(headers) {
  const out = new Headers(headers);
  const named = (headers.get("connection") || "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  for (const name of [...HOP_BY_HOP, ...named]) {
    try {
      out.delete(name);
    } catch {
      // a Connection token that is not a valid header name: nothing to delete
    }
  }
  return out;
}

export function requestIdFor(request) {
  const incoming = request.headers.get("x-request-id");
  return incoming && REQUEST_ID_RE.test(incoming) ? incoming : crypto.randomUUID();
}

/** An RFC 9457 body in the API's own shape (urn:spectral:problem:<slug>). */
function problem(status, slug, title, detail, requestId) {
  const body = { type: `urn:spectral:problem:${slug}`, title, status, detail, request_id: requestId };
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      "content-type": PROBLEM,
      "cache-control": "no-store",
      "x-request-id": requestId,
    },
  });
}

function timeoutMs(env) {
  const n = Number(env.ORIGIN_TIMEOUT_MS);
  return Number.isFinite(n) && n > 0 ? n : DEFAULT_TIMEOUT_MS;
}

/** The origin URL for `incoming`: origin base path + incoming path, incoming query. */
export function targetUrl(incoming, originUrl) {
  const origin = new URL(originUrl);
  const base = origin.pathname.replace(/\/+$/, "");
  origin.pathname = base + incoming.pathname;
  origin.search = incoming.search;
  origin.hash = "";
  return origin;
}

function forwardedHeaders(request, url, requestId) {
  const headers = stripHopByHop(request.headers);
  // The runtime sets Host from the target URL; the client's host goes in X-Forwarded-Host.
  headers.delete("host");
  const clientIp = request.headers.get("cf-connecting-ip");
  if (clientIp) {
    const prior = request.headers.get("x-forwarded-for");
    const chain = prior ? prior.split(",").map((s) => s.trim()).filter(Boolean) : [];
    if (chain[chain.length - 1] !== clientIp) chain.push(clientIp);
    headers.set("x-forwarded-for", chain.join(", "));
  }
  // Set by the edge, never trusted from the client.
  headers.set("x-forwarded-proto", url.protocol.replace(/:$/, ""));
  headers.set("x-forwarded-host", url.host);
  headers.set("x-request-id", requestId);
  return headers;
}

export async function handle(request, env) {
  const requestId = requestIdFor(request);
  const url = new URL(request.url);
  let target;
  try {
    if (!env || !env.ORIGIN_URL) throw new Error("ORIGIN_URL is not set");
    target = targetUrl(url, env.ORIGIN_URL);
  } catch {
    console.error(JSON.stringify({ event: "edge.misconfigured", request_id: requestId }));
    return problem(500, "edge-misconfigured", "Edge misconfigured", "the edge has no valid origin configured",
      requestId);
  }

  const hasBody = request.method !== "GET" && request.method !== "HEAD" && request.body !== null;
  const init = {
    method: request.method,
    headers: forwardedHeaders(request, url, requestId),
    body: hasBody ? request.body : undefined,
    redirect: "manual",
    signal: AbortSignal.timeout(timeoutMs(env)),
  };
  if (hasBody) init.duplex = "half"; // streaming body (required by WHATWG fetch in Node)

  let upstream;
  try {
    upstream = await fetch(target, init);
  } catch (err) {
    const timedOut = err && (err.name === "TimeoutError" || err.name === "AbortError");
    // Log the kind of failure only: the error text may contain the origin's address.
    console.error(JSON.stringify({ event: timedOut ? "edge.origin_timeout" : "edge.origin_unreachable",
      request_id: requestId, error: err && err.name }));
    return timedOut
      ? problem(504, "origin-timeout", "Gateway timeout", "the API did not answer in time; retry later",
        requestId)
      : problem(502, "bad-gateway", "Bad gateway", "the API is unreachable; retry later", requestId);
  }

  const headers = stripHopByHop(upstream.headers);
  headers.set("x-request-id", requestId);
  return new Response(upstream.body, {
    status: upstream.status,
    statusText: upstream.statusText,
    headers,
  });
}

export default {
  async fetch(request, env, ctx) { // eslint-disable-line no-unused-vars
    return handle(request, env);
  },
};
