//! The fast path: the common case decided in one synchronous call from the entry module, so
//! that no promise is made on the way in. It takes a request whose key the held snapshot decides
//! at once as `valid` (no load, no revalidation, no shard to fetch, no counter to consult) and
//! returns the forwarding plan; anything else returns `None` before any side effect and takes
//! the full pipeline, which prepares and concludes it with the same functions.

use keygate_shared::{evaluate, Code, Evaluation};
use worker::{Context, Env};

use crate::forward::ForwardPlan;
use crate::holder::{self, Plan as Freshness};
use crate::isolate::{self, now_ms};
use crate::pipeline::{conclude, start_refresh};
use crate::prepare::{self, Decided, Incoming, Outcome, Step};

/// The plan for `incoming`, or `None` to take the full pipeline.
pub fn forward(incoming: &Incoming<'_>, env: &Env, ctx: &Context) -> Option<ForwardPlan> {
    let cfg = isolate::loaded_config()?;
    let now = now_ms();
    let index = holder::decidable(&cfg, now)?;
    let Step::Decide(p) = prepare::prepare(incoming, &cfg) else {
        return None;
    };
    let Evaluation::Done(verdict) = evaluate(&*index, &p.facts(), now, None) else {
        return None;
    };
    if verdict.code != Code::Valid {
        return None;
    }
    let decided = Decided::of(verdict, &p);
    // Decided: from here on, the same side effects as the full pipeline.
    if let Freshness::Use { refresh: true, .. } = holder::plan(&cfg, now) {
        start_refresh(&cfg, env, ctx, now);
    }
    match conclude(&cfg, ctx, &p, decided, now) {
        Outcome::Forward(plan) => ForwardPlan::new(plan).ok(),
        Outcome::Refuse(_) => None,
    }
}
