//! The webhook delivery worker: claims due deliveries (on the blocking pool), POSTs them
//! signed with `keygate_shared::webhook`, and records each attempt. Deliveries live in the
//! database from the transaction that created their event until they succeed or fail for
//! good, so a restart at any point loses nothing: whatever is pending is sent by the next
//! worker that runs (a claim's lease covers a crash in the middle of a request). See
//! docs/webhooks.md.

use std::time::{Duration, Instant};

use actix_web::rt::task::JoinHandle;
use actix_web::web;

use crate::config::WebhookSettings;
use crate::domain::webhooks::{self, AttemptOutcome, Outgoing};
use crate::error::blocking;
use crate::state::AppState;

/// Most deliveries claimed (and sent concurrently) at once.
pub const BATCH: i64 = 32;
/// The `User-Agent` of deliveries.
pub const USER_AGENT: &str = concat!("Keygate-Webhooks/", env!("CARGO_PKG_VERSION"));
/// The event id header.
pub const EVENT_ID_HEADER: &str = "Keygate-Event-Id";
/// The delivery id header.
pub const DELIVERY_ID_HEADER: &str = "Keygate-Delivery-Id";

/// Sends deliveries over HTTP or HTTPS (OpenSSL, with the system's trusted roots), only to
/// public addresses unless the settings allow private ones (see [`crate::ssrf`]).
pub struct Sender {
    client: awc::Client,
    allow_private: bool,
    resolver: crate::ssrf::Resolver,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sender(..)")
    }
}

impl Sender {
    /// A client with the settings' timeout. Redirects are not followed: a 3xx is a failed
    /// attempt, as the endpoint's URL should be updated instead.
    pub fn new(settings: &WebhookSettings) -> Self {
        Sender::with_resolver(settings, crate::ssrf::system_resolver())
    }

    /// The same with another resolver (tests: a name whose address changes).
    pub fn with_resolver(settings: &WebhookSettings, resolver: crate::ssrf::Resolver) -> Self {
        let timeout = Duration::from_secs(u64::try_from(settings.timeout_seconds).unwrap_or(10));
        let client = awc::Client::builder()
            .timeout(timeout)
            .connector(awc::Connector::new().timeout(timeout))
            .disable_redirects()
            .finish();
        Sender {
            client,
            allow_private: settings.allow_private_targets,
            resolver,
        }
    }

    /// Sends one delivery; never fails, the outcome says what happened.
    pub async fn send(&self, out: &Outgoing, now_ms: i64) -> AttemptOutcome {
        let started = Instant::now();
        let secrets = out.secrets.in_force(now_ms);
        let signature = keygate_shared::webhook::sign_all(
            secrets.iter().map(String::as_bytes),
            now_ms.div_euclid(1000),
            out.body.as_bytes(),
        );
        let done = |status_code: Option<u16>, error: Option<String>| AttemptOutcome {
            at: now_ms,
            status_code,
            error,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        };
        // Stored URLs were checked at creation; parsing again yields the ASCII (punycode,
        // percent-encoded) form that the HTTP client needs.
        let url = match url::Url::parse(&out.url) {
            Ok(u) => u,
            Err(e) => return done(None, Some(format!("invalid URL: {e}"))),
        };
        // Resolved and checked now, at every attempt (DNS may have changed since the endpoint
        // was created), and connected to exactly the addresses checked.
        // With private targets allowed there is nothing to check: the client resolves.
        let addrs: Vec<Option<std::net::SocketAddr>> = if self.allow_private {
            vec![None]
        } else {
            match crate::ssrf::resolve_target(&url, false, &self.resolver).await {
                Ok(a) => a.into_iter().map(Some).collect(),
                Err(e @ crate::ssrf::TargetError::Forbidden { .. }) => {
                    return done(None, Some(format!("refused, no connection made: {e}")))
                }
                Err(e) => return done(None, Some(e.to_string())),
            }
        };
        let mut last_error = String::from("no address to connect to");
        for addr in addrs {
            let mut request = self.client.post(url.as_str());
            if let Some(addr) = addr {
                request = request.address(addr);
            }
            let request = request
                .insert_header(("Content-Type", "application/json"))
                .insert_header(("User-Agent", USER_AGENT))
                .insert_header((
                    keygate_shared::webhook::SIGNATURE_HEADER,
                    signature.as_str(),
                ))
                .insert_header((EVENT_ID_HEADER, out.event_id.as_str()))
                .insert_header((DELIVERY_ID_HEADER, out.delivery_id.as_str()));
            match request.send_body(out.body.clone()).await {
                // The response body is not read: only the status counts.
                Ok(resp) => return done(Some(resp.status().as_u16()), None),
                // Could not connect to this address: try the next one.
                Err(awc::error::SendRequestError::Connect(e)) => last_error = e.to_string(),
                Err(e) => return done(None, Some(e.to_string())),
            }
        }
        done(None, Some(last_error))
    }
}

/// One round of the worker at `now`: claims up to [`BATCH`] due deliveries, sends them
/// concurrently and records the outcomes. Returns how many were sent. Tests call this with
/// the manual clock's time.
pub async fn deliver_due(
    state: &web::Data<AppState>,
    sender: &Sender,
    now: i64,
) -> anyhow::Result<usize> {
    let lease = webhooks::lease_ms(&state.webhooks);
    let st = state.clone();
    let claimed = blocking(move || {
        let mut conn = st.pool.get()?;
        webhooks::claim_due(&mut conn, now, BATCH, lease)
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot claim deliveries: {e}"))?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let outcomes = futures_util::future::join_all(
        claimed
            .iter()
            .map(|out| sender.send(out, state.clock.now_ms())),
    )
    .await;
    let sent = claimed.len();
    let st = state.clone();
    let results = blocking(move || -> Result<_, keygate_store::StoreError> {
        let mut conn = st.pool.get()?;
        let now = st.clock.now_ms();
        let mut results = Vec::with_capacity(claimed.len());
        for (out, outcome) in claimed.iter().zip(&outcomes) {
            let status = webhooks::record_attempt(&mut conn, &st.webhooks, now, out, outcome)?;
            results.push((out.clone(), outcome.clone(), status));
        }
        Ok(results)
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot record delivery attempts: {e}"))?;
    for (out, outcome, status) in results {
        // Ids and status only: never the URL (it may carry a token) or the secret.
        if outcome.succeeded() {
            tracing::debug!(
                delivery_id = %out.delivery_id,
                endpoint_id = %out.endpoint_id,
                attempt = out.attempts + 1,
                "webhook delivered"
            );
        } else {
            tracing::info!(
                delivery_id = %out.delivery_id,
                endpoint_id = %out.endpoint_id,
                attempt = out.attempts + 1,
                status_code = outcome.status_code,
                error = outcome.error.as_deref().unwrap_or(""),
                state = status.as_str(),
                "webhook attempt failed"
            );
        }
    }
    Ok(sent)
}

/// Starts the worker: a round every poll interval, or at once after a full batch.
pub(crate) fn spawn(state: web::Data<AppState>) -> JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let sender = Sender::new(&state.webhooks);
        loop {
            let now = state.clock.now_ms();
            match deliver_due(&state, &sender, now).await {
                Ok(n) if n as i64 >= BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook delivery round failed"),
            }
            actix_web::rt::time::sleep(state.webhooks.poll_interval).await;
        }
    })
}
