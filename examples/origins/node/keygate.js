// Verifies Keygate-Signature, the header the Keygate edge adds to every request it forwards
// (docs/origins.md). Node.js 18 or later; no dependencies.
//
//   const { keygate } = require("./keygate");
//   app.use(keygate({ secret: process.env.ORIGIN_HMAC_SECRET }));   // Express, before the routes
//
// The middleware is `(req, res, next)`, so it also runs in a plain `http` server (see server.js).
"use strict";

const crypto = require("node:crypto");

const TOLERANCE_SECONDS = 300;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

// Parses `t=<unix seconds>,v1=<hex>,v2=<hex>`; null when it is not that shape. `v1` and `v2`
// may each appear several times.
function parse(header) {
  let t = null;
  const v1 = [];
  const v2 = [];
  for (const raw of header.split(",")) {
    const part = raw.trim();
    const eq = part.indexOf("=");
    if (eq < 0) return null;
    const name = part.slice(0, eq);
    const value = part.slice(eq + 1);
    if (name === "t") {
      // A signed 64-bit decimal integer, as the edge writes it.
      if (!/^[+-]?[0-9]+$/.test(value)) return null;
      const big = BigInt(value);
      if (big < I64_MIN || big > I64_MAX) return null;
      t = big;
    } else if (name === "v1") {
      v1.push(value);
    } else if (name === "v2") {
      v2.push(value);
    } else {
      return null;
    }
  }
  if (t === null || (v1.length === 0 && v2.length === 0)) return null;
  return { t, v1, v2 };
}

function mac(secret, fields) {
  return crypto.createHmac("sha256", secret).update(fields.join("\n"), "utf8").digest();
}

// True when one of `candidates` (hex) is `expected`, compared in constant time.
function anyMatches(candidates, expected) {
  let ok = false;
  for (const c of candidates) {
    if (c.length !== 64 || !/^[0-9a-fA-F]+$/.test(c)) continue;
    ok = crypto.timingSafeEqual(Buffer.from(c, "hex"), expected) || ok;
  }
  return ok;
}

/**
 * Checks a Keygate-Signature header. Answers "valid_v2", "valid_v1_only" (only a version-1 MAC,
 * from an edge still sending it: accept it only during the transition), "stale", "mismatch"
 * or "malformed".
 *
 * @param {object} a
 * @param {string|Buffer} a.secret  ORIGIN_HMAC_SECRET
 * @param {string} a.header         the Keygate-Signature value
 * @param {string} a.method         the request method
 * @param {string} a.target         the request target exactly as received (path and query, not decoded)
 * @param {string} a.keyId          Keygate-Key-Id
 * @param {string} a.projectId      Keygate-Project-Id
 * @param {string} a.environment    Keygate-Environment
 * @param {number} [a.now]          Unix seconds; the clock by default
 * @param {number} [a.toleranceSeconds]
 */
function verifySignature(a) {
  const parsed = parse(a.header);
  if (parsed === null) return "malformed";
  const now = BigInt(Math.floor(a.now ?? Date.now() / 1000));
  const tolerance = BigInt(Math.max(0, a.toleranceSeconds ?? TOLERANCE_SECONDS));
  const skew = now > parsed.t ? now - parsed.t : parsed.t - now;
  if (skew > tolerance) return "stale";
  const t = parsed.t.toString();
  const method = a.method.toUpperCase();
  if (parsed.v2.length > 0) {
    const expected = mac(a.secret, [t, method, a.target, a.keyId, a.projectId, a.environment]);
    return anyMatches(parsed.v2, expected) ? "valid_v2" : "mismatch";
  }
  // Version 1 covered the path only, without the query.
  const q = a.target.indexOf("?");
  const path = q < 0 ? a.target : a.target.slice(0, q);
  const expected = mac(a.secret, [t, method, path, a.keyId]);
  return anyMatches(parsed.v1, expected) ? "valid_v1_only" : "mismatch";
}

const REFUSALS = {
  missing: ["missing_signature", "The request has no Keygate-Signature header."],
  malformed: ["malformed_signature", "The Keygate-Signature header is not t=...,v2=...."],
  stale: ["stale_signature", "The signature's timestamp is too far from this server's clock."],
  mismatch: ["signature_mismatch", "The signature does not match this request."],
  valid_v1_only: ["signature_v1_only", "The request carries a version-1 signature only."],
};

function refuse(res, outcome) {
  const [code, detail] = REFUSALS[outcome];
  const body = JSON.stringify({
    type: `urn:keygate:problem:${code}`,
    title: "Request not signed by the Keygate edge",
    status: 401,
    detail,
    code,
  });
  res.statusCode = 401;
  res.setHeader("Content-Type", "application/problem+json");
  res.setHeader("Cache-Control", "no-store");
  res.end(body);
}

function one(value) {
  return Array.isArray(value) ? value.join(",") : value;
}

/**
 * Middleware `(req, res, next)` for Express or a plain `http` server. Refuses with 401 and a
 * problem+json body unless the request carries a valid signature; on success sets `req.keygate`
 * to `{ keyId, projectId, environment, version }`.
 *
 * @param {object} options
 * @param {string|Buffer} options.secret     ORIGIN_HMAC_SECRET (never log it)
 * @param {boolean} [options.acceptV1=false] also accept version-1 signatures (the transition)
 * @param {number} [options.toleranceSeconds=300]
 * @param {() => number} [options.now]       Unix seconds; for tests
 */
function keygate(options) {
  if (!options || !options.secret || options.secret.length === 0) {
    throw new Error("keygate: the shared secret is required");
  }
  const { secret, acceptV1 = false, toleranceSeconds = TOLERANCE_SECONDS } = options;
  const clock = options.now ?? (() => Date.now() / 1000);
  return function keygateSignature(req, res, next) {
    const header = one(req.headers["keygate-signature"]);
    if (header === undefined) return refuse(res, "missing");
    const keyId = one(req.headers["keygate-key-id"]) ?? "";
    const projectId = one(req.headers["keygate-project-id"]) ?? "";
    const environment = one(req.headers["keygate-environment"]) ?? "";
    const outcome = verifySignature({
      secret,
      header,
      method: req.method,
      // The target as received: Express rewrites `req.url` under a mount path, not
      // `req.originalUrl`; Node leaves both percent-encoded.
      target: req.originalUrl ?? req.url,
      keyId,
      projectId,
      environment,
      now: clock(),
      toleranceSeconds,
    });
    if (outcome === "valid_v2" || (outcome === "valid_v1_only" && acceptV1)) {
      req.keygate = {
        keyId,
        projectId,
        environment,
        version: outcome === "valid_v2" ? 2 : 1,
      };
      return next();
    }
    return refuse(res, outcome);
  };
}

module.exports = { keygate, verifySignature, TOLERANCE_SECONDS };
