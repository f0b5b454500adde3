//! Webhook endpoints, their delivery log, and the database side of delivery: claiming due
//! deliveries, recording attempts with exponential backoff, and queueing `key.expiring`.
//! The HTTP side (signing and sending) is in `crate::delivery`. See docs/webhooks.md.
//!
//! Endpoints and their secrets are here; the API's request and response bodies in [`views`];
//! the delivery log and queue in [`deliveries`]; `key.expiring` in [`expiring`].

mod deliveries;
mod expiring;
mod views;

pub use deliveries::{
    backoff_ms, backoff_with_jitter_ms, claim_due, get_delivery, lease_ms, list_deliveries,
    payload, record_attempt, retry_delivery, AttemptOutcome, Outgoing, WebhookSettings,
};
pub use expiring::queue_expiring;
pub use views::{
    AttemptView, CreateWebhook, CreatedWebhook, DeliveryDetail, DeliveryPage, DeliveryQuery,
    DeliveryRow, DeliveryView, EventView, RotateSecret, RotatedSecret, UpdateWebhook, WebhookList,
    WebhookView,
};

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::sql_types::Text;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::audit;
use super::events::EVENT_TYPES;
use crate::db::schema::{webhook_deliveries, webhook_endpoints};
use crate::db::{write_tx, DbConn};
use crate::error::StoreError;
use crate::ids::WebhookId;

/// Signing secrets start with this.
pub const SECRET_PREFIX: &str = "whsec_";
const SECRET_RANDOM_LEN: usize = 32;
/// How much of the secret views show: `whsec_` and four random characters.
const SECRET_START_LEN: usize = 10;
/// Longest URL.
pub const MAX_URL_CHARS: usize = 2048;
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Default `expiring_days`.
pub const DEFAULT_EXPIRING_DAYS: i64 = 7;
/// Largest `expiring_days`.
pub const MAX_EXPIRING_DAYS: i64 = 90;
/// Longest grace period of a secret rotation: 7 days.
pub const MAX_SECRET_GRACE_SECONDS: u32 = 7 * 86_400;
const DAY_MS: i64 = 86_400_000;
/// `last_error` of the pending deliveries of a deleted endpoint.
pub const ENDPOINT_DELETED: &str = "endpoint deleted";
const MAX_ERROR_CHARS: usize = 500;

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// Every attempt failed, or the endpoint was deleted.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

keygate_shared::text_column!(
    DeliveryStatus,
    DeliveryStatus::parse,
    DeliveryStatus::as_str
);

/// An endpoint row. `secret` holds the signing secret, and during a rotation the previous one
/// with its end (see [`Secrets`]); `Debug` leaves it out.
#[derive(Clone, Queryable)]
pub struct EndpointRow {
    pub id: WebhookId,
    pub url: String,
    pub description: String,
    /// JSON array of event types.
    pub events: String,
    pub expiring_days: i64,
    pub secret: String,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for EndpointRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRow")
            .field("id", &self.id)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// The signing secrets of an endpoint as stored in its `secret` column: the current secret,
/// then, while a rotation's grace period runs, the previous secret and the end of the grace
/// period in Unix ms, separated by spaces (secrets are base62, so never contain one).
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Signs every delivery.
    pub current: String,
    /// Also signs deliveries until the given time.
    pub previous: Option<(String, i64)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Parses the column.
    pub fn parse(column: &str) -> Secrets {
        let mut parts = column.split(' ');
        let current = parts.next().unwrap_or_default().to_owned();
        let previous = match (parts.next(), parts.next().and_then(|t| t.parse().ok())) {
            (Some(p), Some(until)) => Some((p.to_owned(), until)),
            _ => None,
        };
        Secrets { current, previous }
    }

    /// The column value.
    pub fn to_column(&self) -> String {
        match &self.previous {
            Some((p, until)) => format!("{} {p} {until}", self.current),
            None => self.current.clone(),
        }
    }

    /// The secrets that sign a delivery sent at `now`: the current one first.
    pub fn in_force(&self, now: i64) -> Vec<String> {
        let mut v = vec![self.current.clone()];
        if let Some((p, until)) = &self.previous {
            if now < *until {
                v.push(p.clone());
            }
        }
        v
    }
}

/// A new signing secret: `whsec_` and 32 base62 characters from the OS CSPRNG.
pub fn generate_secret() -> String {
    const BASE62: &[u8] = keygate_shared::key::BASE62;
    let mut rng = rand::rngs::OsRng;
    let mut s = String::with_capacity(SECRET_PREFIX.len() + SECRET_RANDOM_LEN);
    s.push_str(SECRET_PREFIX);
    for _ in 0..SECRET_RANDOM_LEN {
        s.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
    s
}

fn check_url(url: &str) -> Result<String, StoreError> {
    let bad = |why: &str| StoreError::validation("url", why.to_owned());
    let url = url.trim();
    if url.is_empty() {
        return Err(bad("must not be empty"));
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(bad(&format!("must be at most {MAX_URL_CHARS} characters")));
    }
    // The URL parser silently drops tabs and newlines; refuse them instead.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace or control characters"));
    }
    let parsed = url::Url::parse(url).map_err(|_| bad("must be an absolute http or https URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not contain userinfo (user:password@)"));
    }
    if parsed.fragment().is_some() {
        return Err(bad("must not contain a fragment (#...)"));
    }
    Ok(url.to_owned())
}

fn check_events(types: &[String]) -> Result<String, StoreError> {
    if types.is_empty() {
        return Err(StoreError::validation(
            "events",
            format!("must name at least one of {}", EVENT_TYPES.join(", ")),
        ));
    }
    for (i, t) in types.iter().enumerate() {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(StoreError::validation(
                format!("events[{i}]"),
                format!("{t:?} is not one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if types[..i].contains(t) {
            return Err(StoreError::validation(
                format!("events[{i}]"),
                format!("{t:?} is listed twice"),
            ));
        }
    }
    serde_json::to_string(types).map_err(StoreError::internal)
}

fn check_expiring_days(days: i64) -> Result<i64, StoreError> {
    if !(1..=MAX_EXPIRING_DAYS).contains(&days) {
        return Err(StoreError::validation(
            "expiring_days",
            format!("must be between 1 and {MAX_EXPIRING_DAYS}"),
        ));
    }
    Ok(days)
}

fn check_description(d: &str) -> Result<String, StoreError> {
    let d = d.trim();
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(StoreError::validation(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if d.chars().any(char::is_control) {
        return Err(StoreError::validation(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(d.to_owned())
}

/// Loads an endpoint row.
pub fn find_row(conn: &mut DbConn, id: &WebhookId) -> Result<EndpointRow, StoreError> {
    webhook_endpoints::table
        .find(id)
        .first(conn)
        .optional()?
        .ok_or_else(|| StoreError::not_found("webhook endpoint", id))
}

/// Creates an endpoint with a new signing secret.
pub fn create(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    input: CreateWebhook,
) -> Result<CreatedWebhook, StoreError> {
    let url = check_url(&input.url)?;
    let events = check_events(&input.events)?;
    let description = check_description(input.description.as_deref().unwrap_or(""))?;
    let expiring_days = check_expiring_days(input.expiring_days.unwrap_or(DEFAULT_EXPIRING_DAYS))?;
    let secret = generate_secret();
    let id = WebhookId::generate();
    write_tx(conn, |conn| {
        diesel::insert_into(webhook_endpoints::table)
            .values((
                webhook_endpoints::id.eq(&id),
                webhook_endpoints::url.eq(&url),
                webhook_endpoints::description.eq(&description),
                webhook_endpoints::events.eq(&events),
                webhook_endpoints::expiring_days.eq(expiring_days),
                webhook_endpoints::secret.eq(&secret),
                webhook_endpoints::enabled.eq(input.enabled.unwrap_or(true)),
                webhook_endpoints::created_at.eq(now),
                webhook_endpoints::updated_at.eq(now),
            ))
            .execute(conn)?;
        let view = WebhookView::from_row(&find_row(conn, &id)?);
        audit::record(
            conn,
            now,
            actor,
            "webhook.create",
            &id,
            serde_json::json!({ "before": null, "after": view }),
        )?;
        Ok(CreatedWebhook { view, secret })
    })
}

/// Every endpoint, newest first.
pub fn list(conn: &mut DbConn) -> Result<WebhookList, StoreError> {
    let rows: Vec<EndpointRow> = webhook_endpoints::table
        .order(webhook_endpoints::id.desc())
        .load(conn)?;
    Ok(WebhookList {
        items: rows.iter().map(WebhookView::from_row).collect(),
    })
}

/// One endpoint.
pub fn get(conn: &mut DbConn, id: &WebhookId) -> Result<WebhookView, StoreError> {
    Ok(WebhookView::from_row(&find_row(conn, id)?))
}

/// Applies a partial update.
pub fn update(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &WebhookId,
    input: UpdateWebhook,
) -> Result<WebhookView, StoreError> {
    let url = input.url.as_deref().map(check_url).transpose()?;
    let events = input.events.as_deref().map(check_events).transpose()?;
    let description = input
        .description
        .as_deref()
        .map(check_description)
        .transpose()?;
    let expiring_days = input.expiring_days.map(check_expiring_days).transpose()?;
    write_tx(conn, |conn| {
        let row = find_row(conn, id)?;
        let before = WebhookView::from_row(&row);
        diesel::update(webhook_endpoints::table.find(id))
            .set((
                webhook_endpoints::url.eq(url.unwrap_or(row.url)),
                webhook_endpoints::events.eq(events.unwrap_or(row.events)),
                webhook_endpoints::description.eq(description.unwrap_or(row.description)),
                webhook_endpoints::expiring_days.eq(expiring_days.unwrap_or(row.expiring_days)),
                webhook_endpoints::enabled.eq(input.enabled.unwrap_or(row.enabled)),
                webhook_endpoints::updated_at.eq(now),
            ))
            .execute(conn)?;
        let after = WebhookView::from_row(&find_row(conn, id)?);
        audit::record(
            conn,
            now,
            actor,
            "webhook.update",
            id,
            serde_json::json!({ "before": before, "after": after }),
        )?;
        Ok(after)
    })
}

/// Deletes an endpoint. Its pending deliveries become `failed` ("endpoint deleted"); the
/// delivery rows and their attempts stay in the database.
pub fn delete(conn: &mut DbConn, now: i64, actor: &str, id: &WebhookId) -> Result<(), StoreError> {
    write_tx(conn, |conn| {
        let row = find_row(conn, id)?;
        let before = WebhookView::from_row(&row);
        let abandoned = diesel::update(
            webhook_deliveries::table
                .filter(webhook_deliveries::endpoint_id.eq(id))
                .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending)),
        )
        .set((
            webhook_deliveries::status.eq(DeliveryStatus::Failed),
            webhook_deliveries::next_attempt_at.eq(None::<i64>),
            webhook_deliveries::last_error.eq(Some(ENDPOINT_DELETED)),
        ))
        .execute(conn)?;
        diesel::delete(webhook_endpoints::table.find(id)).execute(conn)?;
        audit::record(
            conn,
            now,
            actor,
            "webhook.delete",
            id,
            serde_json::json!({ "before": before, "after": null, "pending_failed": abandoned }),
        )?;
        Ok(())
    })
}

/// Replaces the signing secret; the old one keeps signing (next to the new one) for
/// `grace_seconds`.
pub fn rotate_secret(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &WebhookId,
    input: RotateSecret,
) -> Result<RotatedSecret, StoreError> {
    if input.grace_seconds > MAX_SECRET_GRACE_SECONDS {
        return Err(StoreError::validation(
            "grace_seconds",
            format!("must be between 0 and {MAX_SECRET_GRACE_SECONDS} (7 days)"),
        ));
    }
    let secret = generate_secret();
    write_tx(conn, |conn| {
        let row = find_row(conn, id)?;
        let before = WebhookView::from_row(&row);
        let old = Secrets::parse(&row.secret);
        let until = (input.grace_seconds > 0).then(|| now + i64::from(input.grace_seconds) * 1000);
        let secrets = Secrets {
            current: secret.clone(),
            previous: until.map(|u| (old.current, u)),
        };
        diesel::update(webhook_endpoints::table.find(id))
            .set((
                webhook_endpoints::secret.eq(secrets.to_column()),
                webhook_endpoints::updated_at.eq(now),
            ))
            .execute(conn)?;
        let view = WebhookView::from_row(&find_row(conn, id)?);
        audit::record(
            conn,
            now,
            actor,
            "webhook.rotate_secret",
            id,
            serde_json::json!({
                "before": before,
                "after": view,
                "grace_seconds": input.grace_seconds,
            }),
        )?;
        Ok(RotatedSecret {
            view,
            secret,
            previous_secret_expires_at: until,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "https://hooks.example.com/keygate",
            "http://127.0.0.1:8080/hook?x=1",
            "https://example.com",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/relative",
            "example.com/hook",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "https://example.com/#frag",
            "https://example.com/#",
            "https://exa\nmple.com/",
            "https://example.com/a b",
            "mailto:a@example.com",
        ] {
            assert!(
                matches!(check_url(bad), Err(StoreError::Validation { ref field, .. }) if field == "url"),
                "{bad:?}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(check_url(&long).is_err());
    }

    #[test]
    fn event_lists() {
        assert!(check_events(&["key.created".into(), "alert.raised".into()]).is_ok());
        let field = |v: Vec<&str>| match check_events(
            &v.into_iter().map(str::to_owned).collect::<Vec<_>>(),
        ) {
            Err(StoreError::Validation { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(vec![]), "events");
        assert_eq!(field(vec!["key.created", "key.deleted"]), "events[1]");
        assert_eq!(field(vec!["key.created", "key.created"]), "events[1]");
    }

    #[test]
    fn secrets_are_prefixed_base62() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(s.len(), 6 + 32);
        assert!(s[6..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(s, generate_secret());
    }

    #[test]
    fn secrets_column_round_trip() {
        let plain = Secrets::parse("whsec_a");
        assert_eq!(plain.in_force(0), vec!["whsec_a".to_owned()]);
        let rotating = Secrets {
            current: "whsec_new".into(),
            previous: Some(("whsec_old".into(), 1000)),
        };
        let parsed = Secrets::parse(&rotating.to_column());
        assert_eq!(parsed, rotating);
        assert_eq!(parsed.in_force(999), vec!["whsec_new", "whsec_old"]);
        assert_eq!(parsed.in_force(1000), vec!["whsec_new"]);
    }
}
