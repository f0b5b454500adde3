// node --test: the shared known-answer vectors, and a real request through the middleware.
"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const { test } = require("node:test");

const { verifySignature } = require("./keygate");
const { createServer } = require("./server");

const vectors = JSON.parse(
  fs.readFileSync(path.join(__dirname, "../../../shared/testdata/origin_signature.json"), "utf8"),
);

test("every known-answer vector", () => {
  assert.ok(vectors.cases.length >= 30);
  for (const c of vectors.cases) {
    const got = verifySignature({
      secret: c.secret,
      header: c.header,
      method: c.method,
      target: c.path_and_query,
      keyId: c.key_id,
      projectId: c.project_id,
      environment: c.environment,
      now: c.now,
      toleranceSeconds: vectors.tolerance_seconds,
    });
    assert.equal(got, c.expected, c.name);
  }
});

function request(port, target, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: target, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode, type: res.headers["content-type"], body }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("the middleware serves a signed request and refuses others", async () => {
  const kat = vectors.cases.find((c) => c.name === "readme_known_answer");
  const now = kat.now;
  const server = createServer({ secret: kat.secret, now: () => now });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  try {
    const headers = {
      "Keygate-Key-Id": kat.key_id,
      "Keygate-Project-Id": kat.project_id,
      "Keygate-Environment": kat.environment,
    };
    const ok = await request(port, kat.path_and_query, { ...headers, "Keygate-Signature": kat.header });
    assert.equal(ok.status, 200, ok.body);
    assert.equal(JSON.parse(ok.body).key_id, kat.key_id);

    // The raw target reaches the check: percent-encoding is signed as sent.
    const raw = vectors.cases.find((c) => c.name === "percent_encoded_target");
    const encoded = await request(port, raw.path_and_query, { ...headers, "Keygate-Signature": raw.header });
    assert.equal(encoded.status, 200, encoded.body);
    assert.equal(JSON.parse(encoded.body).url, raw.path_and_query);

    for (const [hdrs, code] of [
      [headers, "missing_signature"],
      [{ ...headers, "Keygate-Signature": "garbage" }, "malformed_signature"],
      [{ ...headers, "Keygate-Project-Id": "prj_2", "Keygate-Signature": kat.header }, "signature_mismatch"],
    ]) {
      const res = await request(port, kat.path_and_query, hdrs);
      assert.equal(res.status, 401);
      assert.equal(res.type, "application/problem+json");
      const problem = JSON.parse(res.body);
      assert.equal(problem.code, code);
      assert.equal(problem.status, 401);
      assert.ok(!res.body.includes(kat.secret));
    }
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test("version 1 is refused unless accepted", async () => {
  const v1 = vectors.cases.find((c) => c.name === "v1_only");
  const headers = {
    "Keygate-Key-Id": v1.key_id,
    "Keygate-Project-Id": v1.project_id,
    "Keygate-Environment": v1.environment,
    "Keygate-Signature": v1.header,
  };
  for (const [acceptV1, status] of [[false, 401], [true, 200]]) {
    const server = createServer({ secret: v1.secret, acceptV1, now: () => v1.now });
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    try {
      const res = await request(server.address().port, v1.path_and_query, headers);
      assert.equal(res.status, status, res.body);
      if (status === 401) assert.equal(JSON.parse(res.body).code, "signature_v1_only");
    } finally {
      await new Promise((r) => server.close(r));
    }
  }
});
