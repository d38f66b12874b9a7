// Tests for the edge shim, run with Node's built-in runner: `node --test shims/edge/`.
// The worker is called as Cloudflare calls it (worker.fetch(request, env, ctx)) and proxies
// to a real local origin (node:http on an ephemeral port).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";

import worker, { HOP_BY_HOP, stripHopByHop, targetUrl } from "./worker.js";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The origin: records what it received and answers per path. */
function startOrigin() {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      const path = new URL(req.url, "http://origin").pathname;
      if (path === "/health") {
        const health = JSON.stringify({ status: "fail", version: "1.4.2", generation: 7 });
        res.writeHead(503, {
          "content-type": "application/health+json",
          "cache-control": "no-store",
          "content-length": Buffer.byteLength(health),
        });
        res.end(health);
      } else if (path === "/hop") {
        res.writeHead(200, {
          "content-type": "text/plain",
          connection: "keep-alive, x-origin-hop",
          "keep-alive": "timeout=5",
          "x-origin-hop": "secret",
          "proxy-authenticate": "Basic realm=origin",
          "x-end-to-end": "kept",
        });
        res.end("hop");
      } else if (path === "/slow") {
        const timer = setTimeout(() => res.end("too late"), 3000);
        res.on("close", () => clearTimeout(timer));
      } else {
        res.writeHead(201, {
          "content-type": "application/json",
          "x-origin": "yes",
          "set-cookie": "a=1; HttpOnly",
        });
        res.end(JSON.stringify({ ok: true }));
      }
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({ server, seen, url: `http://127.0.0.1:${port}`, port });
    });
  });
}

/** A port that nothing listens on: bound by the kernel once, then released. */
function closedPort() {
  return new Promise((resolve) => {
    const s = http.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const ctx = { waitUntil() {}, passThroughOnException() {} };

function call(path, init = {}, env) {
  return worker.fetch(new Request(`https://api.example.com${path}`, init), env, ctx);
}

describe("edge worker", () => {
  let origin;
  let env;

  before(async () => {
    origin = await startOrigin();
    env = { ORIGIN_URL: origin.url };
  });

  after(() => {
    origin.server.closeAllConnections();
    origin.server.close();
  });

  test("forwards method, path, query, body and end-to-end headers; returns the origin's answer", async () => {
    const body = JSON.stringify({ org: "acme", input: { x: 1 } });
    const res = await call("/api/decide/acme?dry_run=1&tag=a%20b&tag=c", {
      method: "POST",
      body,
      headers: {
        "content-type": "application/json",
        "content-length": String(Buffer.byteLength(body)),
        authorization: "Bearer tenant-key",
        "x-custom": "value",
      },
    }, env);
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("x-origin"), "yes");
    assert.equal(res.headers.get("set-cookie"), "a=1; HttpOnly");
    assert.deepEqual(await res.json(), { ok: true });

    const got = origin.seen.at(-1);
    assert.equal(got.method, "POST");
    assert.equal(got.url, "/api/decide/acme?dry_run=1&tag=a%20b&tag=c");
    assert.equal(got.body, body);
    assert.equal(got.headers["content-type"], "application/json");
    assert.equal(got.headers.authorization, "Bearer tenant-key");
    assert.equal(got.headers["x-custom"], "value");
    assert.equal(got.headers.host, new URL(origin.url).host, "Host is the origin's own");
  });

  test("the console's calls on its own domain reach the origin with the session cookie and CSRF header", async () => {
    // the operator console (apps/console, a Pages project) routes console.example.com/api/*
    // to this Worker: same origin for the page, so the cookie is SameSite=Strict
    const res = await worker.fetch(new Request("https://console.example.com/api/operator/dead/redrive", {
      method: "POST",
      body: "{\"generation\":3,\"all\":true}",
      headers: {
        "content-type": "application/json",
        cookie: "spectral_session=opaque-id",
        "x-csrf-token": "csrf-value",
      },
    }), env, ctx);
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("set-cookie"), "a=1; HttpOnly", "the session cookie comes back as set");
    const got = origin.seen.at(-1);
    assert.equal(got.url, "/api/operator/dead/redrive");
    assert.equal(got.headers.cookie, "spectral_session=opaque-id");
    assert.equal(got.headers["x-csrf-token"], "csrf-value");
    assert.equal(got.headers["x-forwarded-host"], "console.example.com");
    assert.equal(got.headers["x-forwarded-proto"], "https");
  });

  test("forwards other methods with and without a body", async () => {
    for (const [method, body] of [["PUT", "put-body"], ["PATCH", "{}"], ["DELETE", undefined], ["GET", undefined]]) {
      const res = await call("/api/modules/x", { method, body }, env);
      assert.equal(res.status, 201, method);
      await res.arrayBuffer();
      const got = origin.seen.at(-1);
      assert.equal(got.method, method);
      assert.equal(got.url, "/api/modules/x");
      assert.equal(got.body, body ?? "");
    }
  });

  test("a HEAD request gets the origin's status and headers", async () => {
    const res = await call("/health", { method: "HEAD" }, env);
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("content-type"), "application/health+json");
    assert.equal(origin.seen.at(-1).method, "HEAD");
  });

  test("adds X-Forwarded-For from CF-Connecting-IP, X-Forwarded-Proto and -Host set by the edge", async () => {
    const res = await call("/echo", {
      headers: {
        "cf-connecting-ip": "203.0.113.7",
        "x-forwarded-for": "198.51.100.1",
        "x-forwarded-proto": "ftp", // client-supplied: overwritten
        "x-forwarded-host": "evil.example", // client-supplied: overwritten
      },
    }, env);
    await res.arrayBuffer();
    const h = origin.seen.at(-1).headers;
    assert.equal(h["x-forwarded-for"], "198.51.100.1, 203.0.113.7");
    assert.equal(h["x-forwarded-proto"], "https");
    assert.equal(h["x-forwarded-host"], "api.example.com");

    const plain = await call("/echo", { headers: { "cf-connecting-ip": "203.0.113.9" } }, env);
    await plain.arrayBuffer();
    assert.equal(origin.seen.at(-1).headers["x-forwarded-for"], "203.0.113.9");
  });

  test("without an incoming id, a fresh UUID X-Request-Id goes to the origin and back", async () => {
    const res = await call("/echo", {}, env);
    await res.arrayBuffer();
    const id = res.headers.get("x-request-id");
    assert.match(id, UUID_RE);
    assert.equal(origin.seen.at(-1).headers["x-request-id"], id);

    const again = await call("/echo", {}, env);
    await again.arrayBuffer();
    assert.notEqual(again.headers.get("x-request-id"), id, "one id per request");
  });

  test("a valid incoming X-Request-Id is preserved; an invalid one is replaced", async () => {
    const res = await call("/echo", { headers: { "x-request-id": "req-abc_123.4:5" } }, env);
    await res.arrayBuffer();
    assert.equal(res.headers.get("x-request-id"), "req-abc_123.4:5");
    assert.equal(origin.seen.at(-1).headers["x-request-id"], "req-abc_123.4:5");

    for (const bad of ["has space", "x".repeat(200), "<script>", "-leading-dash"]) {
      const r = await call("/echo", { headers: { "x-request-id": bad } }, env);
      await r.arrayBuffer();
      assert.match(r.headers.get("x-request-id"), UUID_RE, bad);
      assert.equal(origin.seen.at(-1).headers["x-request-id"], r.headers.get("x-request-id"));
    }
  });

  test("hop-by-hop request headers, including those named in Connection, are not forwarded", async () => {
    const res = await call("/echo", {
      headers: {
        connection: "x-client-hop, keep-alive",
        "x-client-hop": "secret",
        "keep-alive": "timeout=5",
        "proxy-authorization": "Basic Zm9vOmJhcg==",
        te: "trailers",
        trailer: "x-checksum",
        upgrade: "websocket",
        "x-end-to-end": "kept",
      },
    }, env);
    assert.equal(res.status, 201);
    await res.arrayBuffer();
    const h = origin.seen.at(-1).headers;
    for (const name of ["x-client-hop", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade"]) {
      assert.equal(h[name], undefined, name);
    }
    assert.ok(!(h.connection || "").includes("x-client-hop"), "the client's Connection is not relayed");
    assert.equal(h["x-end-to-end"], "kept");
  });

  test("hop-by-hop response headers, including those named in Connection, are not returned", async () => {
    const res = await call("/hop", {}, env);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "hop");
    for (const name of ["connection", "keep-alive", "x-origin-hop", "proxy-authenticate", "transfer-encoding"]) {
      assert.equal(res.headers.get(name), null, name);
    }
    assert.equal(res.headers.get("x-end-to-end"), "kept");
  });

  test("stripHopByHop removes every listed field and the Connection-named ones", () => {
    const h = new Headers(Object.fromEntries(HOP_BY_HOP.map((n) => [n, "1"])));
    h.set("connection", "X-A , x-b,, bad header name");
    h.set("x-a", "1");
    h.set("x-b", "1");
    h.set("x-c", "1");
    assert.deepEqual([...stripHopByHop(h).keys()], ["x-c"]);
  });

  test("/health passes through unchanged: status, body and headers, and never from a cache", async () => {
    const before = origin.seen.filter((r) => r.url === "/health").length;
    for (let i = 0; i < 2; i++) {
      const res = await call("/health", { headers: { accept: "application/health+json" } }, env);
      assert.equal(res.status, 503, "a failing probe is not turned into an edge error");
      assert.equal(res.headers.get("content-type"), "application/health+json");
      assert.equal(res.headers.get("cache-control"), "no-store");
      assert.deepEqual(await res.json(), { status: "fail", version: "1.4.2", generation: 7 });
    }
    const hits = origin.seen.filter((r) => r.url === "/health").length - before;
    assert.equal(hits, 2, "each probe reached the origin");
  });

  test("an ORIGIN_URL with a base path prefixes the forwarded path", async () => {
    assert.equal(targetUrl(new URL("https://e.example/api/x?q=1"), "http://o.example/base/").href,
      "http://o.example/base/api/x?q=1");
    const res = await call("/echo?q=1", {}, { ORIGIN_URL: `${origin.url}/base` });
    await res.arrayBuffer();
    assert.equal(origin.seen.at(-1).url, "/base/echo?q=1");
  });

  test("an unreachable origin is a 502 problem+json that does not reveal the origin", async (t) => {
    const logged = t.mock.method(console, "error", () => {});
    const port = await closedPort();
    const res = await call("/api/decide", { method: "POST", body: "{}", headers: { "x-request-id": "r-502" } },
      { ORIGIN_URL: `http://127.0.0.1:${port}` });
    assert.equal(res.status, 502);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    assert.equal(res.headers.get("x-request-id"), "r-502");
    const text = await res.text();
    const body = JSON.parse(text);
    assert.equal(body.status, 502);
    assert.equal(body.type, "urn:spectral:problem:bad-gateway");
    assert.equal(body.request_id, "r-502");
    assert.ok(body.title && body.detail);
    for (const leak of ["127.0.0.1", String(port), "ECONNREFUSED"]) {
      assert.ok(!text.includes(leak), `response leaks ${leak}`);
      assert.ok(!JSON.stringify(logged.mock.calls).includes(leak), `log leaks ${leak}`);
    }
  });

  test("a slow origin is a 504 problem+json after ORIGIN_TIMEOUT_MS", async (t) => {
    t.mock.method(console, "error", () => {});
    const started = Date.now();
    const res = await call("/slow", {}, { ORIGIN_URL: origin.url, ORIGIN_TIMEOUT_MS: "150" });
    const elapsed = Date.now() - started;
    assert.equal(res.status, 504);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    assert.match(res.headers.get("x-request-id"), UUID_RE);
    const text = await res.text();
    const body = JSON.parse(text);
    assert.equal(body.type, "urn:spectral:problem:origin-timeout");
    assert.equal(body.request_id, res.headers.get("x-request-id"));
    assert.ok(!text.includes("127.0.0.1") && !text.includes(String(origin.port)));
    assert.ok(elapsed < 2500, `timed out after ${elapsed} ms, not at the origin's 3 s`);
  });

  test("a missing ORIGIN_URL is a 500 problem, not a crash", async (t) => {
    t.mock.method(console, "error", () => {});
    const res = await call("/echo", {}, {});
    assert.equal(res.status, 500);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    assert.equal((await res.json()).type, "urn:spectral:problem:edge-misconfigured");
  });
});
