//! keygate-edge: the Cloudflare Worker.
use worker::*;

#[event(fetch)]
async fn fetch(_req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    Response::ok("keygate-edge")
}
