//! Usage reporting: each decided request is counted in the isolate's buffer, and a due batch is
//! posted to the control plane after the response, never on its path.

use std::cell::RefCell;
use std::rc::Rc;

use keygate_shared::Code;
use worker::{console_error, console_log, Context, Fetch, Headers, Method, Request, RequestInit};

use crate::config::EdgeConfig;
use crate::usage::{Batch, Caller, UsageBuffer};

thread_local! {
    static USAGE: RefCell<UsageBuffer> = RefCell::new(UsageBuffer::default());
}

/// Counts one verdict for `key_id` and starts a post when a batch is due.
pub fn record(
    key_id: &str,
    code: Code,
    caller: &Caller<'_>,
    now: i64,
    cfg: &Rc<EdgeConfig>,
    ctx: &Context,
) {
    let due = USAGE.with(|u| {
        let mut u = u.borrow_mut();
        u.record(key_id, code, caller, now);
        u.take_if_due(now, cfg.usage_flush_ms)
    });
    if let Some(batch) = due {
        let c = Rc::clone(cfg);
        ctx.wait_until(async move { post(&c, batch, now).await });
    }
}

/// Whether a post that got `status` may succeed later: not for a request the control plane
/// refuses as such (400, 413, 422), which would otherwise be retried forever.
fn worth_retrying(status: u16) -> bool {
    !matches!(status, 400 | 413 | 422)
}

async fn post(cfg: &EdgeConfig, batch: Batch, now: i64) {
    if batch.dropped > 0 {
        console_log!(
            "keygate-edge: {} sighting values over the cap of {} per key and kind were not reported",
            batch.dropped,
            crate::usage::MAX_VALUES_PER_KIND
        );
    }
    let send = async {
        let headers = Headers::new();
        headers.set("Authorization", &format!("Bearer {}", cfg.edge_token))?;
        headers.set("Content-Type", "application/json")?;
        let body =
            serde_json::to_string(&batch).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(body.into()));
        let req = Request::new_with_init(&format!("{}/v1/usage", cfg.control_plane_url), &init)?;
        let resp = Fetch::Request(req).send().await?;
        Ok::<u16, worker::Error>(resp.status_code())
    };
    match send.await {
        Ok(status) if status < 300 => {}
        Ok(status) if !worth_retrying(status) => {
            console_error!(
                "keygate-edge: control plane refused a usage report ({status}); dropped it"
            );
        }
        Ok(status) => {
            console_error!("keygate-edge: usage post answered {status}, keeping counts");
            USAGE.with(|u| u.borrow_mut().restore(batch, now));
        }
        Err(e) => {
            console_error!("keygate-edge: usage post failed, keeping counts: {e}");
            USAGE.with(|u| u.borrow_mut().restore(batch, now));
        }
    }
}
