//! Webhook endpoints, their delivery log, and the database side of delivery: claiming due
//! deliveries, recording attempts with exponential backoff, and queueing `key.expiring`.
//! The HTTP side (signing and sending) is in `crate::delivery`. See docs/webhooks.md.

use diesel::prelude::*;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{self, EVENT_TYPES, KEY_EXPIRING};
use super::keys::KeyView;
use super::{audit, Page};
use crate::db::models::KeyRow;
use crate::db::schema::webhook_endpoints;
use crate::db::schema::{api_keys, events as events_t, webhook_attempts, webhook_deliveries};
use crate::db::{write_tx, DbConn};
use crate::error::ApiError;
use crate::ids::new_id;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(ApiError::internal(anyhow::anyhow!(
                "stored delivery status {other:?}"
            ))),
        }
    }
}

/// An endpoint row. `secret` holds the signing secret, and during a rotation the previous one
/// with its end (see [`Secrets`]); `Debug` leaves it out.
#[derive(Clone, Queryable)]
pub struct EndpointRow {
    pub id: String,
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

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Absolute http or https URL without userinfo or fragment, at most 2048 characters.
    #[schema(example = "https://hooks.example.com/keygate")]
    pub url: String,
    /// Event types to receive (at least one, no duplicates): `key.created`, `key.rotated`,
    /// `key.revoked`, `key.expiring`, `alert.raised`.
    #[schema(
        value_type = Vec<crate::schemas::WebhookEventSchema>,
        example = json!(["key.revoked", "key.expiring"]),
        min_items = 1
    )]
    pub events: Vec<String>,
    /// Free text, at most 500 characters.
    pub description: Option<String>,
    /// `key.expiring` fires this many days before a key expires: 1 to 90, default 7.
    #[schema(minimum = 1, maximum = 90)]
    pub expiring_days: Option<i64>,
    /// Default true. A disabled endpoint gets nothing.
    pub enabled: Option<bool>,
}

/// Body of `PATCH /v1/webhooks/{webhook_id}`: any of the fields of the create body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// New URL.
    pub url: Option<String>,
    /// Replaces the event types (at least one, no duplicates).
    #[schema(value_type = Option<Vec<crate::schemas::WebhookEventSchema>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
    /// 1 to 90.
    #[schema(minimum = 1, maximum = 90)]
    pub expiring_days: Option<i64>,
    /// Enable or disable. Pending deliveries of a disabled endpoint wait; they are sent when it
    /// is enabled again.
    pub enabled: Option<bool>,
}

/// Body of `POST /v1/webhooks/{webhook_id}/rotate-secret`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing deliveries next to the new one: 0 to 604800
    /// (7 days). Default 0: the old secret stops at once.
    #[serde(default)]
    #[schema(maximum = 604800)]
    pub grace_seconds: u32,
}

/// An endpoint as the API shows it: never the secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// `whk_...`.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// Days of warning for `key.expiring`.
    pub expiring_days: i64,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// `whsec_` and the secret's first four characters, to tell secrets apart.
    pub secret_start: String,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

impl WebhookView {
    fn from_row(r: &EndpointRow) -> Self {
        let secrets = Secrets::parse(&r.secret);
        WebhookView {
            id: r.id.clone(),
            url: r.url.clone(),
            description: r.description.clone(),
            events: serde_json::from_str(&r.events).unwrap_or_default(),
            expiring_days: r.expiring_days,
            enabled: r.enabled,
            secret_start: secrets.current.chars().take(SECRET_START_LEN).collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A created endpoint: its view and its signing secret, shown this once. `Debug` leaves the
/// secret out.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// The view.
    #[serde(flatten)]
    pub view: WebhookView,
    /// The signing secret (`whsec_...`). Store it now: it is never shown again.
    pub secret: String,
}

/// A rotated secret: the endpoint, the new secret (shown this once), and until when the old
/// one still signs. `Debug` leaves the secret out.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RotatedSecret {
    /// The view.
    #[serde(flatten)]
    pub view: WebhookView,
    /// The new signing secret. Store it now: it is never shown again.
    pub secret: String,
    /// RFC 3339 end of the old secret's grace period; `null` when it stopped at once.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires_at: Option<i64>,
}

impl std::fmt::Debug for CreatedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedWebhook")
            .field("view", &self.view)
            .field("secret", &crate::REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for RotatedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedSecret")
            .field("view", &self.view)
            .field("secret", &crate::REDACTED)
            .field(
                "previous_secret_expires_at",
                &self.previous_secret_expires_at,
            )
            .finish()
    }
}

/// Every endpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    /// Newest first.
    pub items: Vec<WebhookView>,
}

/// Query of `GET /v1/webhooks/{webhook_id}/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryStatus>)]
    pub status: Option<DeliveryStatus>,
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^(dlv_[0-9A-Za-z]{26})?$")]
    pub cursor: Option<String>,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// `dlv_...`; also the `Keygate-Delivery-Id` header.
    pub id: String,
    /// `evt_...`; also the body's `id` and the `Keygate-Event-Id` header.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// State.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// RFC 3339 time of the next attempt; `null` unless pending.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
    /// RFC 3339 time of the latest attempt.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<i64>,
    /// HTTP status of the latest attempt; `null` when there was no response.
    pub last_status_code: Option<i64>,
    /// Why the latest attempt failed without a response (timeout, refused connection), or
    /// `endpoint deleted`.
    pub last_error: Option<String>,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A page of deliveries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Queryable)]
pub struct AttemptView {
    /// 1, 2, ...
    pub attempt: i64,
    /// RFC 3339 time the request was sent.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// HTTP status of the response; `null` when there was none.
    pub status_code: Option<i64>,
    /// Why there was no response.
    pub error: Option<String>,
    /// Milliseconds from sending to the response head (or the failure).
    pub duration_ms: i64,
}

/// An event as delivered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// `evt_...`.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// The payload's `data`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A delivery with its attempts and its event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// Oldest first.
    pub attempts: Vec<AttemptView>,
    /// The event sent.
    pub event: EventView,
}

/// A delivery row.
#[derive(Debug, Clone, Queryable)]
pub struct DeliveryRow {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
}

impl DeliveryView {
    fn from_row(r: DeliveryRow, event_type: String) -> Result<Self, ApiError> {
        Ok(DeliveryView {
            status: DeliveryStatus::parse(&r.status)?,
            id: r.id,
            event_id: r.event_id,
            event_type,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_attempt_at: r.last_attempt_at,
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            created_at: r.created_at,
        })
    }
}

fn check_url(url: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::validation("url", why.to_owned());
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

fn check_events(types: &[String]) -> Result<String, ApiError> {
    if types.is_empty() {
        return Err(ApiError::validation(
            "events",
            format!("must name at least one of {}", EVENT_TYPES.join(", ")),
        ));
    }
    for (i, t) in types.iter().enumerate() {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(ApiError::validation(
                format!("events[{i}]"),
                format!("{t:?} is not one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if types[..i].contains(t) {
            return Err(ApiError::validation(
                format!("events[{i}]"),
                format!("{t:?} is listed twice"),
            ));
        }
    }
    serde_json::to_string(types).map_err(ApiError::internal)
}

fn check_expiring_days(days: i64) -> Result<i64, ApiError> {
    if !(1..=MAX_EXPIRING_DAYS).contains(&days) {
        return Err(ApiError::validation(
            "expiring_days",
            format!("must be between 1 and {MAX_EXPIRING_DAYS}"),
        ));
    }
    Ok(days)
}

fn check_description(d: &str) -> Result<String, ApiError> {
    let d = d.trim();
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::validation(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if d.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(d.to_owned())
}

/// Loads an endpoint row.
pub fn find_row(conn: &mut DbConn, id: &str) -> Result<EndpointRow, ApiError> {
    webhook_endpoints::table
        .find(id)
        .first(conn)
        .optional()?
        .ok_or_else(|| ApiError::not_found("webhook endpoint", id))
}

/// Creates an endpoint with a new signing secret.
pub fn create(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    input: CreateWebhook,
) -> Result<CreatedWebhook, ApiError> {
    let url = check_url(&input.url)?;
    let events = check_events(&input.events)?;
    let description = check_description(input.description.as_deref().unwrap_or(""))?;
    let expiring_days = check_expiring_days(input.expiring_days.unwrap_or(DEFAULT_EXPIRING_DAYS))?;
    let secret = generate_secret();
    let id = new_id("whk");
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
pub fn list(conn: &mut DbConn) -> Result<WebhookList, ApiError> {
    let rows: Vec<EndpointRow> = webhook_endpoints::table
        .order(webhook_endpoints::id.desc())
        .load(conn)?;
    Ok(WebhookList {
        items: rows.iter().map(WebhookView::from_row).collect(),
    })
}

/// One endpoint.
pub fn get(conn: &mut DbConn, id: &str) -> Result<WebhookView, ApiError> {
    Ok(WebhookView::from_row(&find_row(conn, id)?))
}

/// Applies a partial update.
pub fn update(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &str,
    input: UpdateWebhook,
) -> Result<WebhookView, ApiError> {
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
pub fn delete(conn: &mut DbConn, now: i64, actor: &str, id: &str) -> Result<(), ApiError> {
    write_tx(conn, |conn| {
        let row = find_row(conn, id)?;
        let before = WebhookView::from_row(&row);
        let abandoned = diesel::update(
            webhook_deliveries::table
                .filter(webhook_deliveries::endpoint_id.eq(id))
                .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending.as_str())),
        )
        .set((
            webhook_deliveries::status.eq(DeliveryStatus::Failed.as_str()),
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
    id: &str,
    input: RotateSecret,
) -> Result<RotatedSecret, ApiError> {
    if input.grace_seconds > MAX_SECRET_GRACE_SECONDS {
        return Err(ApiError::validation(
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

/// An endpoint's deliveries, newest first.
pub fn list_deliveries(
    conn: &mut DbConn,
    endpoint_id: &str,
    q: DeliveryQuery,
) -> Result<DeliveryPage, ApiError> {
    let page = Page::parse(q.limit, q.cursor, "dlv")?;
    find_row(conn, endpoint_id)?;
    let mut query = webhook_deliveries::table
        .inner_join(events_t::table)
        .filter(webhook_deliveries::endpoint_id.eq(endpoint_id.to_owned()))
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
    endpoint_id: &str,
    delivery_id: &str,
) -> Result<(DeliveryRow, EventView), ApiError> {
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
        found.ok_or_else(|| ApiError::not_found("delivery", delivery_id))?;
    let event = EventView {
        id,
        event_type,
        created_at,
        data: serde_json::from_str(&data).map_err(ApiError::internal)?,
    };
    Ok((row, event))
}

/// One delivery with its attempts and its event.
pub fn get_delivery(
    conn: &mut DbConn,
    endpoint_id: &str,
    delivery_id: &str,
) -> Result<DeliveryDetail, ApiError> {
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
    endpoint_id: &str,
    delivery_id: &str,
) -> Result<DeliveryView, ApiError> {
    write_tx(conn, |conn| {
        let endpoint = find_row(conn, endpoint_id)?;
        if !endpoint.enabled {
            return Err(ApiError::Conflict {
                code: "endpoint_disabled",
                detail: format!(
                    "webhook endpoint {endpoint_id:?} is disabled; enable it to send deliveries"
                ),
            });
        }
        find_delivery(conn, endpoint_id, delivery_id)?;
        diesel::update(webhook_deliveries::table.find(delivery_id))
            .set((
                webhook_deliveries::status.eq(DeliveryStatus::Pending.as_str()),
                webhook_deliveries::next_attempt_at.eq(Some(now)),
            ))
            .execute(conn)?;
        let (row, event) = find_delivery(conn, endpoint_id, delivery_id)?;
        DeliveryView::from_row(row, event.event_type)
    })
}

// ---------------------------------------------------------------------------------------
// Delivery: claiming, recording, backoff.

/// A claimed delivery, ready to send. `Debug` leaves out the secrets.
#[derive(Clone)]
pub struct Outgoing {
    /// `dlv_...`.
    pub delivery_id: String,
    /// `whk_...`.
    pub endpoint_id: String,
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
            .field("delivery_id", &self.delivery_id)
            .field("endpoint_id", &self.endpoint_id)
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
) -> Result<Vec<Outgoing>, ApiError> {
    type Due = (
        String,
        String,
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
        .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending.as_str()))
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
                    .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending.as_str()))
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
) -> Result<DeliveryStatus, ApiError> {
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
            this_attempt.filter(webhook_deliveries::status.eq(DeliveryStatus::Pending.as_str())),
        )
        .set((
            webhook_deliveries::attempts.eq(attempt),
            webhook_deliveries::status.eq(status.as_str()),
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

// ---------------------------------------------------------------------------------------
// key.expiring

/// Queues `key.expiring` for every enabled endpoint subscribed to it and every live key
/// (not revoked, not rotated) with `now < expires_at <= now + expiring_days`. The event is
/// keyed by `key.expiring:{key_id}:{expires_at}`, so each (endpoint, key, expiry) gets one
/// delivery however often this runs; a key whose expiry changes is announced again. Returns
/// the number of deliveries queued.
pub fn queue_expiring(conn: &mut DbConn, now: i64) -> Result<usize, ApiError> {
    let endpoints: Vec<(String, String, i64)> = webhook_endpoints::table
        .filter(webhook_endpoints::enabled.eq(true))
        .select((
            webhook_endpoints::id,
            webhook_endpoints::events,
            webhook_endpoints::expiring_days,
        ))
        .load(conn)?;
    let endpoints: Vec<(String, i64)> = endpoints
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
            let due: Vec<&String> = endpoints
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
                matches!(check_url(bad), Err(ApiError::Validation { ref field, .. }) if field == "url"),
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
            Err(ApiError::Validation { field, .. }) => field,
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
