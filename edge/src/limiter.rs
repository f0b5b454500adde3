//! The `Limiter` Durable Object: one per key, it owns the key's rate-limit and quota counters,
//! so limits hold across isolates. It runs the shared crate's `admit` on its own clock; the
//! runtime's input gates keep each read-decide-write free of interleaving.

use std::cell::Cell;

use keygate_shared::{admit, LimitState, Limits};
use worker::{durable_object, Date, DurableObject, Env, Request, Response, Result, State};

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
