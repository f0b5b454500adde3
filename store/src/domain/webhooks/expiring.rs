//! `key.expiring`: queued once per endpoint, key and expiry.

use diesel::prelude::*;

use super::DAY_MS;
use crate::db::models::KeyRow;
use crate::db::schema::{api_keys, webhook_endpoints};
use crate::db::{write_tx, DbConn};
use crate::domain::events::{self, KEY_EXPIRING};
use crate::domain::keys::KeyView;
use crate::error::StoreError;
use crate::ids::WebhookId;

/// Queues `key.expiring` for every enabled endpoint subscribed to it and every live key
/// (not revoked, not rotated) with `now < expires_at <= now + expiring_days`. The event is
/// keyed by `key.expiring:{key_id}:{expires_at}`, so each (endpoint, key, expiry) gets one
/// delivery however often this runs; a key whose expiry changes is announced again. Returns
/// the number of deliveries queued.
pub fn queue_expiring(conn: &mut DbConn, now: i64) -> Result<usize, StoreError> {
    let endpoints: Vec<(WebhookId, String, i64)> = webhook_endpoints::table
        .filter(webhook_endpoints::enabled.eq(true))
        .select((
            webhook_endpoints::id,
            webhook_endpoints::events,
            webhook_endpoints::expiring_days,
        ))
        .load(conn)?;
    let endpoints: Vec<(WebhookId, i64)> = endpoints
        .into_iter()
        .filter(|(_, types, _)| events::subscribes(types, KEY_EXPIRING))
        .map(|(id, _, days)| (id, days))
        .collect();
    let Some(max_days) = endpoints.iter().map(|(_, d)| *d).max() else {
        return Ok(0);
    };
    let keys: Vec<KeyRow> = api_keys::table
        .filter(api_keys::revoked_at.is_null())
        .filter(api_keys::rotated_to.is_null())
        .filter(api_keys::expires_at.gt(now))
        .filter(api_keys::expires_at.le(now + max_days * DAY_MS))
        .order(api_keys::id.asc())
        .load(conn)?;
    if keys.is_empty() {
        return Ok(0);
    }
    write_tx(conn, |conn| {
        let mut queued = 0;
        for key in &keys {
            let Some(expires_at) = key.expires_at else {
                continue;
            };
            let due: Vec<&WebhookId> = endpoints
                .iter()
                .filter(|(_, days)| expires_at <= now + days * DAY_MS)
                .map(|(id, _)| id)
                .collect();
            if due.is_empty() {
                continue;
            }
            let dedupe = format!("{KEY_EXPIRING}:{}:{expires_at}", key.id);
            let data = serde_json::json!({
                "key": KeyView::from_row(key, now)?,
                "expires_at": crate::timefmt::format_ms(expires_at),
                // Whole days left, rounded up: a key 6.5 days from expiry has 7 days left.
                "days_left": (expires_at - now + DAY_MS - 1) / DAY_MS,
            });
            let event_id = events::record_once(conn, now, KEY_EXPIRING, &dedupe, &data)?;
            for endpoint_id in due {
                if events::queue_delivery_once(conn, now, endpoint_id, &event_id)? {
                    queued += 1;
                }
            }
        }
        Ok(queued)
    })
}
