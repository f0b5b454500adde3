//! Events (`key.created`, `alert.raised`, ...) and their fan-out to webhook endpoints.
//!
//! An event is written in the transaction of the change that caused it, together with one
//! pending delivery per enabled endpoint that subscribed to its type, so an event exists if
//! and only if its change committed, and a restart between commit and sending loses nothing:
//! the delivery worker sends whatever is pending.

use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{events, webhook_deliveries, webhook_endpoints};
use crate::db::DbConn;
use crate::error::StoreError;
use crate::ids::{new_id, DeliveryId, WebhookId};

/// A key was issued (also the new key of a rotation).
pub const KEY_CREATED: &str = "key.created";
/// A key was rotated.
pub const KEY_ROTATED: &str = "key.rotated";
/// A key was revoked (by an admin, a leak report or an alert rule).
pub const KEY_REVOKED: &str = "key.revoked";
/// A key entered an endpoint's expiry warning window.
pub const KEY_EXPIRING: &str = "key.expiring";
/// An alert rule flagged a key.
pub const ALERT_RAISED: &str = "alert.raised";

/// Every event type an endpoint may subscribe to.
pub const EVENT_TYPES: [&str; 5] = [
    KEY_CREATED,
    KEY_ROTATED,
    KEY_REVOKED,
    KEY_EXPIRING,
    ALERT_RAISED,
];

/// Whether an endpoint's stored `events` JSON array subscribes to `event_type`.
pub fn subscribes(events_json: &str, event_type: &str) -> bool {
    serde_json::from_str::<Vec<String>>(events_json)
        .map(|types| types.iter().any(|t| t == event_type))
        .unwrap_or(false)
}

/// Records an event and queues a delivery to every enabled endpoint subscribed to its type.
/// Runs inside the caller's transaction (never opens one: `write_tx` does not nest). Returns
/// the event id.
pub fn emit(
    conn: &mut DbConn,
    now: i64,
    event_type: &str,
    data: &impl Serialize,
) -> Result<String, StoreError> {
    let data = serde_json::to_string(data).map_err(StoreError::internal)?;
    let id = new_id("evt");
    diesel::insert_into(events::table)
        .values((
            events::id.eq(&id),
            events::event_type.eq(event_type),
            events::created_at.eq(now),
            events::data.eq(&data),
        ))
        .execute(conn)?;
    let endpoints: Vec<(WebhookId, String)> = webhook_endpoints::table
        .filter(webhook_endpoints::enabled.eq(true))
        .select((webhook_endpoints::id, webhook_endpoints::events))
        .load(conn)?;
    for (endpoint_id, types) in endpoints {
        if subscribes(&types, event_type) {
            queue_delivery(conn, now, &endpoint_id, &id)?;
        }
    }
    Ok(id)
}

/// Records an event that must exist once: the first call with `dedupe_key` inserts it, later
/// calls (from this or another replica) return the same id. Queues nothing; the caller picks
/// the endpoints (see [`queue_delivery_once`]). Runs inside the caller's transaction.
pub fn record_once(
    conn: &mut DbConn,
    now: i64,
    event_type: &str,
    dedupe_key: &str,
    data: &impl Serialize,
) -> Result<String, StoreError> {
    if let Some(id) = find_by_dedupe_key(conn, dedupe_key)? {
        return Ok(id);
    }
    let data = serde_json::to_string(data).map_err(StoreError::internal)?;
    let id = new_id("evt");
    // ON CONFLICT: another replica may have inserted it since the lookup.
    let insert = diesel::insert_into(events::table)
        .values((
            events::id.eq(&id),
            events::event_type.eq(event_type),
            events::created_at.eq(now),
            events::data.eq(&data),
            events::dedupe_key.eq(Some(dedupe_key)),
        ))
        .on_conflict_do_nothing();
    crate::with_backend!(conn, |c| insert.execute(c))?;
    find_by_dedupe_key(conn, dedupe_key)?.ok_or_else(|| {
        StoreError::internal(anyhow::anyhow!(
            "event {dedupe_key:?} vanished after insert"
        ))
    })
}

fn find_by_dedupe_key(conn: &mut DbConn, dedupe_key: &str) -> Result<Option<String>, StoreError> {
    Ok(events::table
        .filter(events::dedupe_key.eq(dedupe_key))
        .select(events::id)
        .first(conn)
        .optional()?)
}

/// Queues a delivery of an event to an endpoint unless it has one already (UNIQUE
/// (endpoint_id, event_id)). Returns whether a delivery was queued.
pub fn queue_delivery_once(
    conn: &mut DbConn,
    now: i64,
    endpoint_id: &WebhookId,
    event_id: &str,
) -> Result<bool, StoreError> {
    let id = DeliveryId::generate();
    let insert = diesel::insert_into(webhook_deliveries::table)
        .values((
            webhook_deliveries::id.eq(&id),
            webhook_deliveries::endpoint_id.eq(endpoint_id),
            webhook_deliveries::event_id.eq(event_id),
            webhook_deliveries::status.eq("pending"),
            webhook_deliveries::attempts.eq(0_i64),
            webhook_deliveries::next_attempt_at.eq(Some(now)),
            webhook_deliveries::created_at.eq(now),
        ))
        .on_conflict_do_nothing();
    let inserted = crate::with_backend!(conn, |c| insert.execute(c))?;
    Ok(inserted == 1)
}

/// Queues one delivery of an event to an endpoint, due now.
pub fn queue_delivery(
    conn: &mut DbConn,
    now: i64,
    endpoint_id: &WebhookId,
    event_id: &str,
) -> Result<DeliveryId, StoreError> {
    let id = DeliveryId::generate();
    diesel::insert_into(webhook_deliveries::table)
        .values((
            webhook_deliveries::id.eq(&id),
            webhook_deliveries::endpoint_id.eq(endpoint_id),
            webhook_deliveries::event_id.eq(event_id),
            webhook_deliveries::status.eq("pending"),
            webhook_deliveries::attempts.eq(0_i64),
            webhook_deliveries::next_attempt_at.eq(Some(now)),
            webhook_deliveries::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_is_an_exact_type_match() {
        assert!(subscribes(
            r#"["key.created","alert.raised"]"#,
            "alert.raised"
        ));
        assert!(!subscribes(r#"["key.created"]"#, "key.create"));
        assert!(!subscribes("not json", "key.created"));
    }
}
