//! The `Limiter` Durable Object: one per key, it owns the key's rate-limit and quota counters,
//! so limits hold across isolates. It runs the shared crate's `admit` on its own clock; the
//! runtime's input gates keep each read-decide-write free of interleaving.

use std::cell::Cell;

use keygate_shared::{admit, LimitDecision, LimitState, Limits};
use worker::{
    durable_object, Date, DurableObject, Env, Headers, Method, Request, RequestInit, Response,
    Result, State,
};

const STATE_KEY: &str = "limits";

/// Counters of one key.
#[allow(missing_debug_implementations)] // `State` has no Debug.
#[durable_object]
pub struct Limiter {
    state: State,
    cached: Cell<Option<LimitState>>,
}

impl DurableObject for Limiter {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            cached: Cell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Ok(limits) = req.json::<Limits>().await else {
            return Response::error("expected the key's limits as JSON", 400);
        };
        let storage = self.state.storage();
        let mut counters = match self.cached.get() {
            Some(c) => c,
            None => storage
                .get::<LimitState>(STATE_KEY)
                .await?
                .unwrap_or_default(),
        };
        let before = counters;
        let decision = admit(&limits, &mut counters, Date::now().as_millis() as i64);
        if counters != before {
            storage.put(STATE_KEY, counters).await?;
        }
        self.cached.set(Some(counters));
        Response::from_json(&decision)
    }
}

/// Asks the key's `Limiter` to admit one request under `limits`.
pub async fn consult(
    env: &Env,
    key_id: &str,
    limits: &Limits,
) -> std::result::Result<LimitDecision, String> {
    let run = async {
        let ns = env.durable_object("LIMITER")?;
        let stub = ns.id_from_name(key_id)?.get_stub()?;
        let headers = Headers::new();
        headers.set("Content-Type", "application/json")?;
        let body =
            serde_json::to_string(limits).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(body.into()));
        let mut resp = stub
            .fetch_with_request(Request::new_with_init("https://limiter/admit", &init)?)
            .await?;
        resp.json::<LimitDecision>().await
    };
    run.await.map_err(|e: worker::Error| e.to_string())
}
