// A plain `http` origin behind the Keygate edge:
//
//   ORIGIN_HMAC_SECRET=... PORT=8080 node server.js
//
// With Express, the same middleware: `app.use(keygate({ secret }))` before the routes.
"use strict";

const http = require("node:http");
const { keygate } = require("./keygate");

function createServer(options) {
  const check = keygate(options);
  return http.createServer((req, res) => {
    check(req, res, () => {
      res.setHeader("Content-Type", "application/json");
      res.end(JSON.stringify({ ok: true, key_id: req.keygate.keyId, url: req.url }));
    });
  });
}

if (require.main === module) {
  const secret = process.env.ORIGIN_HMAC_SECRET;
  if (!secret) {
    console.error("ORIGIN_HMAC_SECRET is not set");
    process.exit(1);
  }
  const port = Number(process.env.PORT ?? 8080);
  createServer({ secret }).listen(port, () => console.log(`listening on :${port}`));
}

module.exports = { createServer };
