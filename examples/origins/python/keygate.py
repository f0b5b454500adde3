"""Verifies Keygate-Signature, the header the Keygate edge adds to every request it forwards
(docs/origins.md). Python 3.8 or later, standard library only.

WSGI (Flask, Django, ...)::

    app.wsgi_app = KeygateWSGI(app.wsgi_app, secret=os.environb[b"ORIGIN_HMAC_SECRET"])

ASGI (Starlette, FastAPI, Django ASGI, ...)::

    app = KeygateASGI(app, secret=os.environb[b"ORIGIN_HMAC_SECRET"])
"""

import hashlib
import hmac
import json
import re
import time
from urllib.parse import quote

__all__ = ["verify_signature", "KeygateWSGI", "KeygateASGI", "TOLERANCE_SECONDS"]

TOLERANCE_SECONDS = 300
_I64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _parse(header):
    """`t=<unix seconds>,v1=<hex>,v2=<hex>` as (t, v1s, v2s); None when not that shape."""
    t, v1, v2 = None, [], []
    for part in header.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            return None
        if name == "t":
            # A signed 64-bit decimal integer, as the edge writes it.
            if not _INTEGER.fullmatch(value):
                return None
            t = int(value)
            if not _I64[0] <= t <= _I64[1]:
                return None
        elif name == "v1":
            v1.append(value)
        elif name == "v2":
            v2.append(value)
        else:
            return None
    if t is None or not (v1 or v2):
        return None
    return t, v1, v2


def _any_matches(candidates, expected):
    """Whether one of the hex `candidates` is `expected`, compared in constant time."""
    ok = False
    for c in candidates:
        if _HEX64.fullmatch(c):
            ok = hmac.compare_digest(bytes.fromhex(c), expected) or ok
    return ok


def _mac(secret, fields):
    return hmac.new(secret, "\n".join(fields).encode("utf-8"), hashlib.sha256).digest()


def verify_signature(secret, header, method, target, key_id, project_id, environment,
                     now=None, tolerance_seconds=TOLERANCE_SECONDS):
    """Checks a Keygate-Signature header.

    `target` is the request target exactly as received: the raw path, then `?` and the raw
    query when there is one, not percent-decoded. Answers "valid_v2", "valid_v1_only" (only a
    version-1 MAC, from an edge still sending it: accept it only during the transition),
    "stale", "mismatch" or "malformed".
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    parsed = _parse(header)
    if parsed is None:
        return "malformed"
    t, v1, v2 = parsed
    now = int(time.time() if now is None else now)
    if abs(now - t) > max(0, tolerance_seconds):
        return "stale"
    method = method.upper()
    if v2:
        expected = _mac(secret, [str(t), method, target, key_id, project_id, environment])
        return "valid_v2" if _any_matches(v2, expected) else "mismatch"
    # Version 1 covered the path only, without the query.
    path = target.split("?", 1)[0]
    expected = _mac(secret, [str(t), method, path, key_id])
    return "valid_v1_only" if _any_matches(v1, expected) else "mismatch"


_REFUSALS = {
    "missing": ("missing_signature", "The request has no Keygate-Signature header."),
    "malformed": ("malformed_signature", "The Keygate-Signature header is not t=...,v2=...."),
    "stale": ("stale_signature",
              "The signature's timestamp is too far from this server's clock."),
    "mismatch": ("signature_mismatch", "The signature does not match this request."),
    "valid_v1_only": ("signature_v1_only", "The request carries a version-1 signature only."),
}


def _problem(outcome):
    code, detail = _REFUSALS[outcome]
    return json.dumps({
        "type": "urn:keygate:problem:" + code,
        "title": "Request not signed by the Keygate edge",
        "status": 401,
        "detail": detail,
        "code": code,
    }).encode("utf-8")


_PROBLEM_HEADERS = [("Content-Type", "application/problem+json"), ("Cache-Control", "no-store")]
# What `quote` leaves alone when a server gives no raw target: RFC 3986 `pchar` and `/`.
_PATH_SAFE = "/!$&'()*+,;=:@~"


class _Checker:
    def __init__(self, secret, accept_v1, tolerance_seconds, clock):
        if not secret:
            raise ValueError("keygate: the shared secret is required")
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        self._accept_v1 = accept_v1
        self._tolerance = tolerance_seconds
        self._clock = clock

    def __repr__(self):
        # Never shows the secret.
        return "<keygate signature check accept_v1=%r>" % (self._accept_v1,)

    def check(self, header, method, target, key_id, project_id, environment):
        """None when the request may pass, else the outcome to refuse it with."""
        if header is None:
            return "missing"
        outcome = verify_signature(self._secret, header, method, target, key_id, project_id,
                                   environment, self._clock(), self._tolerance)
        if outcome == "valid_v2" or (outcome == "valid_v1_only" and self._accept_v1):
            return None
        return outcome


def wsgi_target(environ):
    """The request target as received. WSGI decodes PATH_INFO, so this prefers the raw target a
    server passes along (gunicorn: RAW_URI; uWSGI and others: REQUEST_URI) and only otherwise
    re-encodes SCRIPT_NAME + PATH_INFO, which cannot restore every spelling."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return raw
    # PEP 3333: the decoded path reaches the application as latin-1 code points of its bytes.
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    target = quote(path, safe=_PATH_SAFE)
    query = environ.get("QUERY_STRING", "")
    return target + "?" + query if query else target


class KeygateWSGI:
    """WSGI middleware: 401 with a problem+json body unless the request carries a valid
    Keygate-Signature. On success the key id, project and environment are in
    `environ["keygate"]`."""

    def __init__(self, app, secret, accept_v1=False, tolerance_seconds=TOLERANCE_SECONDS,
                 clock=time.time):
        self.app = app
        self._checker = _Checker(secret, accept_v1, tolerance_seconds, clock)

    def __call__(self, environ, start_response):
        fields = [environ.get(k, "") for k in
                  ("HTTP_KEYGATE_KEY_ID", "HTTP_KEYGATE_PROJECT_ID", "HTTP_KEYGATE_ENVIRONMENT")]
        refused = self._checker.check(environ.get("HTTP_KEYGATE_SIGNATURE"),
                                      environ.get("REQUEST_METHOD", ""), wsgi_target(environ),
                                      *fields)
        if refused is not None:
            body = _problem(refused)
            start_response("401 Unauthorized",
                           _PROBLEM_HEADERS + [("Content-Length", str(len(body)))])
            return [body]
        environ["keygate"] = dict(zip(("key_id", "project_id", "environment"), fields))
        return self.app(environ, start_response)


def asgi_target(scope):
    """The request target as received: `raw_path` and the raw `query_string`; servers without
    `raw_path` get the decoded `path` re-encoded."""
    raw = scope.get("raw_path")
    if raw:
        target = raw.decode("latin-1")
    else:
        target = quote(scope.get("path", "").encode("utf-8"), safe=_PATH_SAFE)
    query = scope.get("query_string", b"")
    return target + "?" + query.decode("latin-1") if query else target


class KeygateASGI:
    """ASGI middleware for HTTP requests: 401 with a problem+json body unless the request
    carries a valid Keygate-Signature. On success the key id, project and environment are in
    `scope["keygate"]`."""

    def __init__(self, app, secret, accept_v1=False, tolerance_seconds=TOLERANCE_SECONDS,
                 clock=time.time):
        self.app = app
        self._checker = _Checker(secret, accept_v1, tolerance_seconds, clock)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope.get("headers", []):
            name = name.decode("latin-1").lower()
            if name.startswith("keygate-"):
                headers.setdefault(name, value.decode("latin-1"))
        fields = [headers.get(k, "") for k in
                  ("keygate-key-id", "keygate-project-id", "keygate-environment")]
        refused = self._checker.check(headers.get("keygate-signature"), scope.get("method", ""),
                                      asgi_target(scope), *fields)
        if refused is not None:
            body = _problem(refused)
            await send({
                "type": "http.response.start",
                "status": 401,
                "headers": [(k.lower().encode(), v.encode()) for k, v in _PROBLEM_HEADERS]
                + [(b"content-length", str(len(body)).encode())],
            })
            await send({"type": "http.response.body", "body": body})
            return None
        scope = dict(scope, keygate=dict(zip(("key_id", "project_id", "environment"), fields)))
        return await self.app(scope, receive, send)
