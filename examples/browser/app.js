// Keygate browser example: one fetch to an edge-protected API with a publishable key.
// No build step and no dependencies; read it top to bottom.
"use strict";

const $ = (id) => document.getElementById(id);

// What the app should do about each problem `code` the edge answers with.
const ADVICE = {
  missing_key: "No key was sent: configure the app's publishable key.",
  malformed_key: "The configured key is not a Keygate key: check for a copy-paste error.",
  unknown_key: "The key does not exist (or the edge has not received it yet): check the configured key.",
  expired_key: "The key has expired: ship the app with a new key.",
  revoked_key: "The key was revoked: ship the app with a new key.",
  environment_not_allowed: "A test key on a live host, or the reverse: use the key of this host's environment.",
  referrer_not_allowed: "This page's origin is not on the key's referrer list.",
  ip_not_allowed: "The user's network is not allowed for this key.",
  insufficient_scope: "The key lacks the scope this route requires: hide or disable the feature.",
  rate_limited: "Too many requests: wait Retry-After seconds, then retry.",
  quota_exceeded: "The key's quota is used up: retry after Retry-After seconds (the period's end).",
  snapshot_unavailable: "The edge cannot verify keys right now: retry with backoff.",
  key_unavailable: "The edge cannot verify this key right now: retry with backoff.",
  invalid_path: "The request path is not acceptable: fix the URL the app builds.",
};

// Fills the form from the page's fragment (`#edge=…&key=…&path=…&placement=…`): a fragment is
// never sent to the server that serves this page, nor in a Referer header.
function fillFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const name of ["edge", "key", "path", "placement"]) {
    const value = params.get(name);
    if (value !== null) $(name).value = value;
  }
}

// Sends the request and returns what the page can read of the answer.
async function call({ edge, key, path, placement }) {
  const url = new URL(path, edge);
  const headers = {};
  if (placement === "authorization") {
    // A non-safelisted header: the browser sends an OPTIONS preflight first.
    headers["Authorization"] = `Bearer ${key}`;
  } else if (placement === "x-api-key") {
    headers["X-API-Key"] = key;
  } else {
    // A simple request: no preflight, but the key is in the URL.
    url.searchParams.set("key", key);
  }
  let response;
  try {
    response = await fetch(url, { headers, mode: "cors", credentials: "omit" });
  } catch (error) {
    // The page cannot tell a CORS refusal from an unreachable edge: the browser hides the
    // answer in both cases (the console says which).
    return { readable: false, error: String(error) };
  }
  const text = await response.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch (_) {
    // Not JSON: show it as text.
  }
  const problem = (response.headers.get("Content-Type") || "").startsWith("application/problem+json");
  const header = (name) => response.headers.get(name);
  return {
    readable: true,
    status: response.status,
    code: problem && body && typeof body === "object" ? body.code : null,
    body,
    // Readable only because the edge lists them in Access-Control-Expose-Headers.
    retry_after: header("Retry-After"),
    rate_limit: {
      limit: header("RateLimit-Limit"),
      remaining: header("RateLimit-Remaining"),
      reset: header("RateLimit-Reset"),
    },
  };
}

function show(outcome) {
  const status = $("status");
  if (!outcome.readable) {
    status.className = "failed";
    status.textContent = "No readable response: the browser blocked it (this origin is not allowed for the key) or the edge is unreachable.";
    $("code").textContent = "";
    $("advice").textContent = "";
    $("body").textContent = outcome.error;
    return;
  }
  status.className = outcome.status < 400 ? "ok" : "refused";
  status.textContent = `HTTP ${outcome.status}`;
  $("code").textContent = outcome.code ? `code: ${outcome.code}` : "";
  let advice = outcome.code ? ADVICE[outcome.code] || "" : "";
  if (outcome.retry_after) advice += ` (Retry-After: ${outcome.retry_after} s)`;
  $("advice").textContent = advice;
  $("body").textContent = typeof outcome.body === "string" ? outcome.body : JSON.stringify(outcome.body, null, 2);
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("status").className = "";
  $("status").textContent = "Sending…";
  const outcome = await call({
    edge: $("edge").value.trim(),
    key: $("key").value.trim(),
    path: $("path").value.trim() || "/",
    placement: $("placement").value,
  });
  show(outcome);
  // For automation: the same outcome, as data.
  document.dispatchEvent(new CustomEvent("keygate:result", { detail: outcome }));
});

fillFromFragment();
