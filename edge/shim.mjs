// The Worker's entry module, given to worker-build as CUSTOM_SHIM. It instantiates the Wasm
// module built from edge/src and asks it to decide each request: first with one synchronous
// call (`keygate_forward`, the fast path: a key the held snapshot accepts at once), else with
// the full pipeline (`keygate_handle`), which answers at the edge or also returns a plan. This
// module is the only forwarder: it sends planned requests with the runtime's own fetch, which is
// much cheaper than forwarding from Wasm.
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

// Forwards `request` as `plan` (a ForwardPlan, edge/src/forward.rs) says: the key leaves with
// all three of its places (the query parameter is already gone from `target`), and the origin's
// answer comes back with the plan's response headers, if any.
function forward(request, plan) {
  const extra = plan.responseHeaders;
  const headers = new Headers(request.headers);
  if (plan.stripAuthorization) headers.delete("Authorization");
  headers.delete("X-API-Key");
  for (const name of FORWARD_STRIPPED) headers.delete(name);
  // No client-sent header in the edge's namespace reaches the origin, in either spelling
  // (CGI-style origins fold `Keygate_X` and `Keygate-X` into one variable).
  for (const name of [...headers.keys()]) {
    if (KEYGATE_HEADER.test(name)) headers.delete(name);
  }
  headers.set("Keygate-Key-Id", plan.keyId);
  headers.set("Keygate-Project-Id", plan.projectId);
  headers.set("Keygate-Environment", plan.environment);
  headers.set("Keygate-Signature", plan.signature);
  const method = request.method;
  // The body streams through untouched.
  const body = method === "GET" || method === "HEAD" ? null : request.body;
  const sent = fetch(plan.target, { method, headers, body, redirect: "manual" });
  // The origin's promise itself when there is nothing to add: no further promise per request.
  if (extra == null) return sent.catch(unreachable);
  return sent.then(
    (upstream) => withHeaders(upstream, extra),
    // The plan's CORS headers too, so a browser app can read why.
    (e) => withHeaders(unreachable(e), extra),
  );
}

// `502 origin_unreachable`, for a `fetch` to the origin that failed.
function unreachable(e) {
  console.error(`keygate-edge: origin unreachable: ${e}`);
  return imports.keygate_origin_unreachable();
}

// Headers whose values add to what the origin sent rather than replace it.
const LISTS = new Set(["vary", "access-control-expose-headers"]);

// `response` with the plan's response headers, if any.
function withHeaders(response, extra) {
  if (extra == null) return response;
  const answer = new Response(response.body, response);
  for (const [name, value] of extra) {
    if (LISTS.has(name.toLowerCase())) answer.headers.append(name, value);
    else answer.headers.set(name, value);
  }
  return answer;
}

// The full pipeline, for what the fast path did not take.
async function handle(request, env, ctx) {
  let handled;
  try {
    handled = await imports.keygate_handle(request, env, ctx);
  } catch (e) {
    recover(e);
  }
  if (handled instanceof Response) return handled;
  return forward(request, handled);
}

export default {
  // Not `async`: a forwarded request's answer is the origin's promise, with no wrapper.
  fetch(request, env, ctx) {
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
      // A trap becomes a rejected promise, as from the full pipeline.
      try {
        recover(e);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (plan === undefined) return handle(request, env, ctx);
    return forward(request, plan);
  },
  async scheduled(event, env, ctx) {
    try {
      return await imports.scheduled(event, env, ctx);
    } catch (e) {
      recover(e);
    }
  },
};
