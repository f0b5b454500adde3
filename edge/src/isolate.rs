//! What an isolate keeps between requests besides its snapshot: its configuration, read once,
//! and the runtime's clock.

use std::cell::RefCell;
use std::rc::Rc;

use worker::Env;

use crate::config::EdgeConfig;

thread_local! {
    static CONFIG: RefCell<Option<Rc<EdgeConfig>>> = const { RefCell::new(None) };
}

/// Unix milliseconds from the runtime's clock.
pub fn now_ms() -> i64 {
    // The static `Date.now()`: no Date object per call.
    worker::js_sys::Date::now() as i64
}

/// The configuration, once a request has read it.
pub fn loaded_config() -> Option<Rc<EdgeConfig>> {
    CONFIG.with(|c| c.borrow().clone())
}

/// The isolate's configuration, read from its vars and secrets on first use.
pub fn config(env: &Env) -> Result<Rc<EdgeConfig>, String> {
    if let Some(c) = loaded_config() {
        return Ok(c);
    }
    let lookup = |name: &str| {
        env.var(name)
            .map(|v| v.to_string())
            .or_else(|_| env.secret(name).map(|v| v.to_string()))
            .ok()
    };
    let cfg = Rc::new(EdgeConfig::from_lookup(lookup).map_err(|e| e.to_string())?);
    CONFIG.with(|c| *c.borrow_mut() = Some(Rc::clone(&cfg)));
    Ok(cfg)
}
