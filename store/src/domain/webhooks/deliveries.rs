//! The delivery log (listing, reading, retrying) and the queue: claiming due deliveries,
//! recording attempts with exponential backoff, and the settings that drive them.

use diesel::prelude::*;
use rand::Rng as _;

use super::{
    find_row, AttemptView, DeliveryDetail, DeliveryPage, DeliveryQuery, DeliveryRow,
    DeliveryStatus, DeliveryView, EventView, Secrets, MAX_ERROR_CHARS,
};
use crate::db::schema::webhook_endpoints;
use crate::db::schema::{events as events_t, webhook_attempts, webhook_deliveries};
use crate::db::{write_tx, DbConn};
use crate::domain::Page;
use crate::error::{ConflictCode, StoreError};
use crate::ids::{DeliveryId, WebhookId};

/// An endpoint's deliveries, newest first.
pub fn list_deliveries(
    conn: &mut DbConn,
    endpoint_id: &WebhookId,
    q: DeliveryQuery,
) -> Result<DeliveryPage, StoreError> {
    let page = Page::parse(q.limit, q.cursor, "dlv")?;
    find_row(conn, endpoint_id)?;
    let mut query = webhook_deliveries::table
        .inner_join(events_t::table)
        .filter(webhook_deliveries::endpoint_id.eq(endpoint_id.clone()))
        .select((webhook_deliveries::all_columns, events_t::event_type))
        .into_boxed();
    if let Some(s) = q.status {
        query = query.filter(webhook_deliveries::status.eq(s.as_str()));
    }
    if let Some(b) = &page.before {
        query = query.filter(webhook_deliveries::id.lt(b.clone()));
    }
    let rows: Vec<(DeliveryRow, String)> = query
        .order(webhook_deliveries::id.desc())
        .limit(page.limit + 1)
        .load(conn)?;
    let (rows, next_cursor) = page.finish(rows, |(r, _)| &r.id);
    let items = rows
        .into_iter()
        .map(|(r, t)| DeliveryView::from_row(r, t))
        .collect::<Result<_, _>>()?;
    Ok(DeliveryPage { items, next_cursor })
}

fn find_delivery(
    conn: &mut DbConn,
    endpoint_id: &WebhookId,
    delivery_id: &DeliveryId,
) -> Result<(DeliveryRow, EventView), StoreError> {
    let found: Option<(DeliveryRow, (String, String, i64, String))> = webhook_deliveries::table
        .inner_join(events_t::table)
        .filter(webhook_deliveries::id.eq(delivery_id))
        .filter(webhook_deliveries::endpoint_id.eq(endpoint_id))
        .select((
            webhook_deliveries::all_columns,
            (
                events_t::id,
                events_t::event_type,
                events_t::created_at,
                events_t::data,
            ),
        ))
        .first(conn)
        .optional()?;
    let (row, (id, event_type, created_at, data)) =
        found.ok_or_else(|| StoreError::not_found("delivery", delivery_id))?;
    let event = EventView {
        id,
        event_type,
        created_at,
        data: serde_json::from_str(&data).map_err(StoreError::internal)?,
    };
    Ok((row, event))
}

/// One delivery with its attempts and its event.
pub fn get_delivery(
    conn: &mut DbConn,
    endpoint_id: &WebhookId,
    delivery_id: &DeliveryId,
) -> Result<DeliveryDetail, StoreError> {
    find_row(conn, endpoint_id)?;
    let (row, event) = find_delivery(conn, endpoint_id, delivery_id)?;
    let attempts: Vec<AttemptView> = webhook_attempts::table
        .filter(webhook_attempts::delivery_id.eq(delivery_id))
        .order(webhook_attempts::attempt.asc())
        .select((
            webhook_attempts::attempt,
            webhook_attempts::at,
            webhook_attempts::status_code,
            webhook_attempts::error,
            webhook_attempts::duration_ms,
        ))
        .load(conn)?;
    Ok(DeliveryDetail {
        delivery: DeliveryView::from_row(row, event.event_type.clone())?,
        attempts,
        event,
    })
}

/// Queues a delivery for an attempt now, whatever its state: a failed delivery gets one more
/// attempt, a pending one skips the rest of its wait, a succeeded one is sent again.
pub fn retry_delivery(
    conn: &mut DbConn,
    now: i64,
    endpoint_id: &WebhookId,
    delivery_id: &DeliveryId,
) -> Result<DeliveryView, StoreError> {
    write_tx(conn, |conn| {
        let endpoint = find_row(conn, endpoint_id)?;
        if !endpoint.enabled {
            return Err(StoreError::Conflict {
                code: ConflictCode::EndpointDisabled,
                detail: format!(
                    "webhook endpoint {:?} is disabled; enable it to send deliveries",
                    endpoint_id.as_str()
                ),
            });
        }
        find_delivery(conn, endpoint_id, delivery_id)?;
        diesel::update(webhook_deliveries::table.find(delivery_id))
            .set((
                webhook_deliveries::status.eq(DeliveryStatus::Pending),
                webhook_deliveries::next_attempt_at.eq(Some(now)),
            ))
            .execute(conn)?;
        let (row, event) = find_delivery(conn, endpoint_id, delivery_id)?;
        DeliveryView::from_row(row, event.event_type)
    })
}

/// A claimed delivery, ready to send. `Debug` leaves out the secrets.
#[derive(Clone)]
pub struct Outgoing {
    /// `dlv_...`.
    pub delivery_id: DeliveryId,
    /// `whk_...`.
    pub endpoint_id: WebhookId,
    /// `evt_...`.
    pub event_id: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// Where to POST.
    pub url: String,
    /// The endpoint's secrets column.
    pub secrets: Secrets,
    /// The exact body to send (and sign).
    pub body: String,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("delivery_id", &self.delivery_id.as_str())
            .field("endpoint_id", &self.endpoint_id.as_str())
            .field("event_id", &self.event_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The body of a delivery: `{"id", "type", "created_at", "data"}`. `data` is the stored JSON
/// text as is, so every attempt sends (and signs) the same bytes.
pub fn payload(event_id: &str, event_type: &str, created_at: i64, data: &str) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    format!(
        "{{\"id\":{},\"type\":{},\"created_at\":{},\"data\":{}}}",
        quote(event_id),
        quote(event_type),
        quote(&crate::timefmt::format_ms(created_at)),
        data
    )
}

/// How long a claim holds a delivery: if the process dies while sending, the delivery is due
/// again after this, so nothing is lost (the receiver may see that attempt twice).
pub fn lease_ms(settings: &WebhookSettings) -> i64 {
    settings.timeout_seconds * 2000 + 30_000
}

/// Claims up to `limit` due deliveries of enabled endpoints. A claim moves `next_attempt_at`
/// forward by the lease, only if it still holds the value read: of two workers (or
/// replicas) that read the same row, one wins and the other's update matches nothing.
pub fn claim_due(
    conn: &mut DbConn,
    now: i64,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<Outgoing>, StoreError> {
    type Due = (
        DeliveryId,
        WebhookId,
        String,
        i64,
        Option<i64>,
        String,
        String,
        String,
        i64,
        String,
    );
    let due: Vec<Due> = webhook_deliveries::table
        .inner_join(webhook_endpoints::table)
        .inner_join(events_t::table)
        .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending))
        .filter(webhook_deliveries::next_attempt_at.le(now))
        .filter(webhook_endpoints::enabled.eq(true))
        .order((
            webhook_deliveries::next_attempt_at.asc(),
            webhook_deliveries::id.asc(),
        ))
        .limit(limit)
        .select((
            webhook_deliveries::id,
            webhook_deliveries::endpoint_id,
            webhook_deliveries::event_id,
            webhook_deliveries::attempts,
            webhook_deliveries::next_attempt_at,
            webhook_endpoints::url,
            webhook_endpoints::secret,
            events_t::event_type,
            events_t::created_at,
            events_t::data,
        ))
        .load(conn)?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    write_tx(conn, |conn| {
        let mut claimed = Vec::with_capacity(due.len());
        for (
            id,
            endpoint_id,
            event_id,
            attempts,
            next,
            url,
            secret,
            event_type,
            created_at,
            data,
        ) in due
        {
            let won = diesel::update(
                webhook_deliveries::table
                    .filter(webhook_deliveries::id.eq(&id))
                    .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending))
                    .filter(webhook_deliveries::next_attempt_at.eq(next))
                    .filter(webhook_deliveries::attempts.eq(attempts)),
            )
            .set(webhook_deliveries::next_attempt_at.eq(Some(now + lease_ms)))
            .execute(conn)?;
            if won == 1 {
                claimed.push(Outgoing {
                    body: payload(&event_id, &event_type, created_at, &data),
                    delivery_id: id,
                    endpoint_id,
                    event_id,
                    attempts,
                    url,
                    secrets: Secrets::parse(&secret),
                });
            }
        }
        Ok(claimed)
    })
}

/// What one attempt gave.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// When it was sent (Unix ms).
    pub at: i64,
    /// The response's status, if there was a response.
    pub status_code: Option<u16>,
    /// Why there was no response.
    pub error: Option<String>,
    /// Sending to response head.
    pub duration_ms: i64,
}

impl AttemptOutcome {
    /// A 2xx response.
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The wait after the `failures`-th failed attempt, before jitter:
/// `min(base * 2^(failures-1), cap)`.
pub fn backoff_ms(settings: &WebhookSettings, failures: i64) -> i64 {
    let base = settings.retry_base_seconds.saturating_mul(1000);
    let cap = settings.retry_cap_seconds.saturating_mul(1000);
    let exp = u32::try_from((failures - 1).clamp(0, 62)).unwrap_or(62);
    base.saturating_mul(2_i64.saturating_pow(exp)).min(cap)
}

/// The wait with up to 10% jitter added, so endpoints that failed together do not all retry
/// in the same instant.
pub fn backoff_with_jitter_ms(settings: &WebhookSettings, failures: i64) -> i64 {
    let d = backoff_ms(settings, failures);
    d + rand::thread_rng().gen_range(0..=d / 10)
}

/// Records an attempt of a claimed delivery at `now` (after it returned): the attempt row,
/// and the delivery's new state: succeeded; pending with the next attempt after the backoff;
/// or failed after the last attempt. A delivery changed meanwhile (its endpoint deleted) keeps
/// its state; an attempt number recorded already (a manual retry raced the worker) is not
/// recorded twice.
pub fn record_attempt(
    conn: &mut DbConn,
    settings: &WebhookSettings,
    now: i64,
    out: &Outgoing,
    outcome: &AttemptOutcome,
) -> Result<DeliveryStatus, StoreError> {
    let attempt = out.attempts + 1;
    let status_code = outcome.status_code.map(i64::from);
    let error = outcome
        .error
        .as_ref()
        .map(|e| e.chars().take(MAX_ERROR_CHARS).collect::<String>());
    let (status, next) = if outcome.succeeded() {
        (DeliveryStatus::Succeeded, None)
    } else if attempt >= settings.max_attempts {
        (DeliveryStatus::Failed, None)
    } else {
        (
            DeliveryStatus::Pending,
            Some(now + backoff_with_jitter_ms(settings, attempt)),
        )
    };
    write_tx(conn, |conn| {
        let this_attempt = webhook_deliveries::table
            .filter(webhook_deliveries::id.eq(&out.delivery_id))
            .filter(webhook_deliveries::attempts.eq(out.attempts));
        let mut updated = diesel::update(
            this_attempt.filter(webhook_deliveries::status.eq(DeliveryStatus::Pending)),
        )
        .set((
            webhook_deliveries::attempts.eq(attempt),
            webhook_deliveries::status.eq(status),
            webhook_deliveries::next_attempt_at.eq(next),
            webhook_deliveries::last_attempt_at.eq(Some(outcome.at)),
            webhook_deliveries::last_status_code.eq(status_code),
            webhook_deliveries::last_error.eq(error.clone()),
        ))
        .execute(conn)?;
        let mut final_status = status;
        if updated == 0 {
            // No longer pending (endpoint deleted while sending): log the attempt, keep the
            // state.
            updated = diesel::update(this_attempt)
                .set((
                    webhook_deliveries::attempts.eq(attempt),
                    webhook_deliveries::last_attempt_at.eq(Some(outcome.at)),
                    webhook_deliveries::last_status_code.eq(status_code),
                ))
                .execute(conn)?;
            final_status = DeliveryStatus::Failed;
        }
        if updated == 1 {
            diesel::insert_into(webhook_attempts::table)
                .values((
                    webhook_attempts::delivery_id.eq(&out.delivery_id),
                    webhook_attempts::attempt.eq(attempt),
                    webhook_attempts::at.eq(outcome.at),
                    webhook_attempts::status_code.eq(status_code),
                    webhook_attempts::error.eq(error.clone()),
                    webhook_attempts::duration_ms.eq(outcome.duration_ms),
                ))
                .execute(conn)?;
        }
        Ok(final_status)
    })
}

/// Webhook delivery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Delay after the first failed attempt (`KEYGATE_WEBHOOK_RETRY_BASE_SECONDS`); it doubles
    /// after each further failure.
    pub retry_base_seconds: i64,
    /// Longest delay between two attempts (`KEYGATE_WEBHOOK_RETRY_CAP_SECONDS`).
    pub retry_cap_seconds: i64,
    /// Attempts before a delivery is given up as failed (`KEYGATE_WEBHOOK_MAX_ATTEMPTS`).
    pub max_attempts: i64,
    /// Time allowed for one request, connect to response head
    /// (`KEYGATE_WEBHOOK_TIMEOUT_SECONDS`).
    pub timeout_seconds: i64,
    /// How often the delivery worker looks for due deliveries.
    pub poll_interval: std::time::Duration,
    /// Whether endpoints may be on loopback, private, link-local or other non-public addresses
    /// (`KEYGATE_WEBHOOK_ALLOW_PRIVATE=true`, for self-hosted receivers). Off by default.
    pub allow_private_targets: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            retry_base_seconds: 10,
            retry_cap_seconds: 3600,
            max_attempts: 12,
            timeout_seconds: 10,
            poll_interval: std::time::Duration::from_secs(1),
            allow_private_targets: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = WebhookSettings::default();
        let waits: Vec<i64> = (1..=11).map(|n| backoff_ms(&s, n) / 1000).collect();
        assert_eq!(
            waits,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(backoff_ms(&s, 1000), 3_600_000);
        for n in 1..=12 {
            let d = backoff_ms(&s, n);
            let j = backoff_with_jitter_ms(&s, n);
            assert!(j >= d && j <= d + d / 10, "{n}: {j} vs {d}");
        }
    }

    #[test]
    fn payload_shape() {
        let body = payload("evt_1", "key.created", 0, r#"{"key":{"id":"key_1"}}"#);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["type"], "key.created");
        assert_eq!(v["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["data"]["key"]["id"], "key_1");
    }
}
