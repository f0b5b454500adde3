"""python3 -m unittest: the shared known-answer vectors, and real requests through the
middleware."""

import asyncio
import json
import pathlib
import threading
import unittest
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

from keygate import KeygateASGI, KeygateWSGI, asgi_target, verify_signature, wsgi_target

VECTORS = json.loads(
    (pathlib.Path(__file__).resolve().parents[3] / "shared/testdata/origin_signature.json")
    .read_text("utf-8"))
CASES = {c["name"]: c for c in VECTORS["cases"]}
KAT = CASES["readme_known_answer"]


def signed_headers(case):
    return {
        "Keygate-Key-Id": case["key_id"],
        "Keygate-Project-Id": case["project_id"],
        "Keygate-Environment": case["environment"],
        "Keygate-Signature": case["header"],
    }


def hello(environ, start_response):
    body = json.dumps({"ok": True, "keygate": environ["keygate"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Vectors(unittest.TestCase):
    def test_every_vector(self):
        self.assertGreaterEqual(len(VECTORS["cases"]), 30)
        for c in VECTORS["cases"]:
            with self.subTest(c["name"]):
                got = verify_signature(c["secret"], c["header"], c["method"],
                                       c["path_and_query"], c["key_id"], c["project_id"],
                                       c["environment"], c["now"], VECTORS["tolerance_seconds"])
                self.assertEqual(got, c["expected"])


class Targets(unittest.TestCase):
    def test_the_raw_target_wins(self):
        environ = {"RAW_URI": "/files/a%20b?q=x%2Fy", "PATH_INFO": "/files/a b",
                   "QUERY_STRING": "q=x%2Fy"}
        self.assertEqual(wsgi_target(environ), "/files/a%20b?q=x%2Fy")
        scope = {"raw_path": b"/files/a%20b", "path": "/files/a b", "query_string": b"q=x%2Fy"}
        self.assertEqual(asgi_target(scope), "/files/a%20b?q=x%2Fy")

    def test_no_raw_target_reencodes(self):
        self.assertEqual(wsgi_target({"PATH_INFO": "/files/a b", "QUERY_STRING": ""}),
                         "/files/a%20b")
        self.assertEqual(asgi_target({"path": "/orders/1", "query_string": b"expand=items"}),
                         "/orders/1?expand=items")


class WSGI(unittest.TestCase):
    def serve(self, **options):
        app = KeygateWSGI(hello, secret=KAT["secret"], clock=lambda: KAT["now"], **options)
        server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return "http://127.0.0.1:%d" % server.server_port

    def get(self, base, target, headers):
        req = urllib.request.Request(base + target, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return res.status, res.headers["Content-Type"], res.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read()

    def test_signed_and_unsigned(self):
        base = self.serve()
        status, _, body = self.get(base, KAT["path_and_query"], signed_headers(KAT))
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["keygate"]["project_id"], KAT["project_id"])
        # wsgiref passes no raw target: the re-encoded one matches the edge's spelling here.
        raw = CASES["percent_encoded_target"]
        status, _, body = self.get(base, raw["path_and_query"], signed_headers(raw))
        self.assertEqual(status, 200, body)

        unsigned = signed_headers(KAT)
        del unsigned["Keygate-Signature"]
        other_project = dict(signed_headers(KAT), **{"Keygate-Project-Id": "prj_2"})
        for headers, code in [(unsigned, "missing_signature"),
                              (other_project, "signature_mismatch")]:
            status, ctype, body = self.get(base, KAT["path_and_query"], headers)
            self.assertEqual(status, 401)
            self.assertEqual(ctype, "application/problem+json")
            problem = json.loads(body)
            self.assertEqual((problem["code"], problem["status"]), (code, 401))
            self.assertNotIn(KAT["secret"].encode(), body)

    def test_v1_only_needs_accept_v1(self):
        v1 = CASES["v1_only"]
        status, _, body = self.get(self.serve(), v1["path_and_query"], signed_headers(v1))
        self.assertEqual((status, json.loads(body)["code"]), (401, "signature_v1_only"))
        status, _, _ = self.get(self.serve(accept_v1=True), v1["path_and_query"],
                                signed_headers(v1))
        self.assertEqual(status, 200)

    def test_the_secret_is_not_in_repr(self):
        app = KeygateWSGI(hello, secret=KAT["secret"])
        self.assertNotIn(KAT["secret"], repr(app._checker))


class ASGI(unittest.TestCase):
    def call(self, case, **changes):
        async def inner(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body",
                        "body": json.dumps(scope["keygate"]).encode()})

        app = KeygateASGI(inner, secret=case["secret"], clock=lambda: case["now"])
        path, _, query = case["path_and_query"].partition("?")
        headers = {k.lower(): v for k, v in signed_headers(case).items()}
        headers.update(changes)
        scope = {
            "type": "http", "method": case["method"], "path": path, "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(k.encode(), v.encode()) for k, v in headers.items() if v is not None],
        }
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        start = sent[0]
        return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])

    def test_signed_and_unsigned(self):
        status, _, body = self.call(KAT)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["key_id"], KAT["key_id"])
        for changes, code in [({"keygate-signature": None}, "missing_signature"),
                              ({"keygate-environment": "test"}, "signature_mismatch")]:
            status, headers, body = self.call(KAT, **changes)
            self.assertEqual(status, 401)
            self.assertEqual(headers[b"content-type"], b"application/problem+json")
            self.assertEqual(json.loads(body)["code"], code)
        stale = CASES["clock_301_s_ahead"]
        status, _, body = self.call(stale)
        self.assertEqual((status, json.loads(body)["code"]), (401, "stale_signature"))


if __name__ == "__main__":
    unittest.main()
