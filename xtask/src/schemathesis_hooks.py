"""Schemathesis hooks for `cargo xtask schemathesis`.

The OpenAPI document states every bound JSON Schema can express (lengths, list sizes, ranges,
patterns, enums, nullability). A few rules it states in prose only, because JSON Schema cannot
say them: grammars checked by a parser (referrer patterns, CIDR networks, route paths, webhook
URLs, origins), rules over several fields (a publishable key needs a referrer, `from` before
`to`, `last_seen` after `first_seen`, `*` alone among methods) and rules that depend on the
clock (`expires_at` in the future). Schemathesis's schema-valid ("positive") cases break them
at random, and the server rightly answers 422.

So, in positive cases only, `before_call` puts a valid value where a generated one breaks such
a rule; every other part of the case is left as generated, and Schemathesis validates the case
again after the hook. Negative cases are never touched. The grammars themselves are covered by
the unit tests and the cargo-fuzz targets.

`filter_failure` drops a refusal of a schema-valid request only for the two answers the
contract gives whatever the body: 422 `duplicate_prefix` (a prefix another project already
has) and 400 `not_a_session` (logging out or changing a password with an API token, which is
how the run authenticates).
"""

import datetime
import ipaddress
import json

import schemathesis

# Rust's `char::is_whitespace` (Unicode White_Space), which `str::trim` strips.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

NOW = datetime.datetime.now(datetime.timezone.utc)
FUTURE = (NOW + datetime.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")

REFERRERS = ["https://shop.example.com/*", "*.example.org", "localhost:3000"]
NETWORKS = ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]
ROUTE_PATHS = ["/orders/*", "/orders", "/v1/items/*"]
WINDOW_DAYS = {"minute": 31, "hour": 366, "day": 1830}


def is_control(c):
    return ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F


def text_ok(s, max_chars):
    """The server's check of names and similar free text: trimmed, not blank, bounded, no
    control characters."""
    if not isinstance(s, str):
        return True
    t = s.strip(RUST_WHITESPACE)
    return 0 < len(t) <= max_chars and not any(is_control(c) for c in t)


def email_ok(s):
    if not isinstance(s, str):
        return True
    e = s.strip(RUST_WHITESPACE).lower()
    if len(e.encode()) > 254 or any(c in RUST_WHITESPACE or is_control(c) for c in e):
        return False
    local, at, domain = e.partition("@")
    return bool(at) and bool(local) and bool(domain) and "@" not in domain


def ip_ok(s):
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return "%" not in s


def parse_time(s):
    try:
        t = datetime.datetime.fromisoformat(s)
    except (TypeError, ValueError):
        return None
    if t.tzinfo is None:
        return None
    return t


def fix_restrictions(r, kind):
    if not isinstance(r, dict):
        return
    if isinstance(r.get("referrers"), list):
        r["referrers"] = [REFERRERS[i % len(REFERRERS)] for i in range(len(r["referrers"]))]
    if isinstance(r.get("ips"), list):
        r["ips"] = [NETWORKS[i % len(NETWORKS)] for i in range(len(r["ips"]))]
    if kind == "publishable" and not r.get("referrers"):
        r["referrers"] = [REFERRERS[0]]


def fix_key_body(body, creating):
    if "name" in body and not text_ok(body["name"], 200):
        body["name"] = "fuzzed key"
    kind = body.get("kind", "secret") if creating else None
    if "restrictions" in body:
        fix_restrictions(body["restrictions"], kind)
    elif kind == "publishable":
        body["restrictions"] = {"referrers": [REFERRERS[0]]}
    if isinstance(body.get("expires_at"), str):
        t = parse_time(body["expires_at"])
        if t is None or t <= NOW + datetime.timedelta(minutes=5):
            body["expires_at"] = FUTURE
    metadata = body.get("metadata")
    if metadata is not None and len(json.dumps(metadata, separators=(",", ":"))) > 4096:
        body["metadata"] = {"customer": "cus_123"}


def fix_routes(routes):
    if not isinstance(routes, list):
        return
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        methods = route.get("methods")
        if isinstance(methods, list) and "*" in methods and len(methods) > 1:
            route["methods"] = ["*"]
        if "path" in route:
            route["path"] = ROUTE_PATHS[i % len(ROUTE_PATHS)]


def fix_project_body(body):
    if "name" in body and not text_ok(body["name"], 200):
        body["name"] = "fuzzed project"
    fix_routes(body.get("routes"))


def fix_webhook_body(body):
    if "url" in body and body["url"] is not None:
        body["url"] = "https://hooks.example.com/keygate"
    if isinstance(body.get("events"), list):
        body["events"] = list(dict.fromkeys(body["events"]))
    description = body.get("description")
    if isinstance(description, str) and description.strip(RUST_WHITESPACE) and not text_ok(
        description, 500
    ):
        body["description"] = "fuzzed endpoint"


def fix_usage_body(body):
    for s in body.get("sightings") or []:
        if not isinstance(s, dict):
            continue
        s["value"] = "203.0.113.7" if s.get("kind") == "ip" else "https://shop.example.com"
        first, last = parse_time(s.get("first_seen")), parse_time(s.get("last_seen"))
        if first is not None and last is not None and last < first:
            s["first_seen"], s["last_seen"] = s["last_seen"], s["first_seen"]


def fix_usage_query(query):
    """`from` no later than `to`, and the window no longer than the granularity allows."""
    to = parse_time(query.get("to")) if "to" in query else NOW
    start = parse_time(query.get("from")) if "from" in query else None
    if to is None or start is None:
        return
    days = WINDOW_DAYS.get(query.get("granularity") or "minute", 31)
    if start > to or to - start > datetime.timedelta(days=days):
        del query["from"]


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    method = case.operation.method.upper()
    path = case.operation.path
    body = case.body if isinstance(case.body, dict) else None
    if body is not None:
        if path == "/v1/projects/{project_id}/keys" and method == "POST":
            fix_key_body(body, creating=True)
        elif path == "/v1/keys/{key_id}" and method == "PATCH":
            fix_key_body(body, creating=False)
        elif path in ("/v1/projects", "/v1/projects/{project_id}"):
            fix_project_body(body)
        elif path.startswith("/v1/webhooks"):
            fix_webhook_body(body)
        elif path == "/v1/usage":
            fix_usage_body(body)
        elif path == "/v1/admin-tokens" and not text_ok(body.get("name"), 200):
            body["name"] = "fuzzed token"
        elif path == "/v1/admins" and not email_ok(body.get("email")):
            body["email"] = "fuzzed@example.com"
        elif path == "/v1/verify":
            if isinstance(body.get("ip"), str) and not ip_ok(body["ip"]):
                body["ip"] = "203.0.113.7"
        elif path == "/v1/leaks":
            if not text_ok(body.get("source"), 100):
                body["source"] = "fuzzed-scanner"
            if body.get("url") is not None:
                body["url"] = "https://github.com/example/repo/blob/main/.env"
    if isinstance(case.query, dict) and path.endswith("/usage") and method == "GET":
        fix_usage_query(case.query)


ANSWERS_TO_ANY_BODY = {(422, "duplicate_prefix"), (400, "not_a_session")}


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    if type(failure).__name__ != "RejectedPositiveData":
        return True
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        return True
    return (response.status_code, code) not in ANSWERS_TO_ANY_BODY
