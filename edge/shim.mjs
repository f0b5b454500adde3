// The Worker's entry module, given to worker-build as CUSTOM_SHIM. It instantiates the Wasm
// module built from edge/src and answers every request with it, except that the common case (a
// key in a header that the held snapshot accepts, with no counter to consult and no CORS
// headers to add) is decided by one synchronous call into Wasm (`keygate_forward`) and then
// forwarded with the runtime's own fetch, which is much cheaper than forwarding from Wasm.
import * as imports from "./index_bg.js";
export * from "./index_bg.js";
import wasmModule from "./index.wasm";
$SNIPPET_JS_IMPORTS

function instantiate() {
  const instance = new WebAssembly.Instance(wasmModule, {
    "./index_bg.js": imports,
    $SNIPPET_WASM_IMPORTS
  });
  imports.__wbg_set_wasm(instance.exports);
  instance.exports.__wbindgen_start?.();
}
instantiate();

// A trap (a Rust panic) leaves the instance's memory in an unknown state: the request that hit
// it fails, and the next one gets a fresh instance (it fetches the snapshot again).
function recover(e) {
  if (e instanceof WebAssembly.RuntimeError) {
    console.error(`keygate-edge: Wasm trapped, starting a fresh instance: ${e}`);
    instantiate();
  }
  throw e;
}

// Must match FORWARD_STRIPPED in edge/src/request.rs (a test checks).
const FORWARD_STRIPPED = ["Proxy-Authorization"];
// Must match `is_keygate_header` in edge/src/request.rs.
const KEYGATE_HEADER = /^keygate[-_]/i;

function originUnreachable() {
  const body = JSON.stringify({
    type: "https://keygate.dev/problems/origin_unreachable",
    title: "Origin unreachable",
    status: 502,
    detail: "The origin could not be reached.",
    code: "origin_unreachable",
  });
  return new Response(body, { status: 502, headers: { "Content-Type": "application/problem+json" } });
}

export default {
  async fetch(request, env, ctx) {
    const h = request.headers;
    let plan;
    try {
      plan = imports.keygate_forward(
        request.url,
        request.method,
        h.get("Authorization") ?? undefined,
        h.get("X-API-Key") ?? undefined,
        h.get("Origin") ?? undefined,
        h.get("Referer") ?? undefined,
        h.get("CF-Connecting-IP") ?? undefined,
        h.get("Host") ?? undefined,
        env,
        ctx,
      );
    } catch (e) {
      recover(e);
    }
    if (plan === undefined) {
      $WAIT_UNTIL_RESPONSE
      try {
        return await imports.fetch(request, env, ctx);
      } catch (e) {
        recover(e);
      }
    }
    const [source, target, keyId, projectId, environment, signature] = plan.split("\n");
    const headers = new Headers(h);
    // The key leaves with all three of its places (the query parameter is gone from `target`).
    if (source === "authorization") headers.delete("Authorization");
    headers.delete("X-API-Key");
    for (const name of FORWARD_STRIPPED) headers.delete(name);
    // No client-sent header in the edge's namespace reaches the origin, in either spelling
    // (CGI-style origins fold `Keygate_X` and `Keygate-X` into one variable).
    for (const name of [...headers.keys()]) {
      if (KEYGATE_HEADER.test(name)) headers.delete(name);
    }
    headers.set("Keygate-Key-Id", keyId);
    headers.set("Keygate-Project-Id", projectId);
    headers.set("Keygate-Environment", environment);
    headers.set("Keygate-Signature", signature);
    const method = request.method;
    const body = method === "GET" || method === "HEAD" ? null : request.body;
    try {
      return await fetch(target, { method, headers, body, redirect: "manual" });
    } catch (e) {
      console.error(`keygate-edge: origin unreachable: ${e}`);
      return originUnreachable();
    }
  },
  async scheduled(event, env, ctx) {
    try {
      return await imports.scheduled(event, env, ctx);
    } catch (e) {
      recover(e);
    }
  },
};
