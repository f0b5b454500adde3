//! The request and response bodies of the webhook API.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DeliveryStatus, EndpointRow, Secrets, SECRET_START_LEN};
use crate::error::StoreError;
use crate::ids::{DeliveryId, WebhookId};

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Absolute http or https URL without userinfo or fragment, at most 2048 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "https://hooks.example.com/keygate")
    )]
    pub url: String,
    /// Event types to receive (at least one, no duplicates): `key.created`, `key.rotated`,
    /// `key.revoked`, `key.expiring`, `alert.raised`.
    #[cfg_attr(feature = "openapi", schema(
        value_type = Vec<crate::schemas::WebhookEventSchema>,
        example = json!(["key.revoked", "key.expiring"]),
        min_items = 1
    ))]
    pub events: Vec<String>,
    /// Free text, at most 500 characters.
    pub description: Option<String>,
    /// `key.expiring` fires this many days before a key expires: 1 to 90, default 7.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 90))]
    pub expiring_days: Option<i64>,
    /// Default true. A disabled endpoint gets nothing.
    pub enabled: Option<bool>,
}

/// Body of `PATCH /v1/webhooks/{webhook_id}`: any of the fields of the create body.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// New URL.
    pub url: Option<String>,
    /// Replaces the event types (at least one, no duplicates).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::schemas::WebhookEventSchema>>, min_items = 1))]
    pub events: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
    /// 1 to 90.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 90))]
    pub expiring_days: Option<i64>,
    /// Enable or disable. Pending deliveries of a disabled endpoint wait; they are sent when it
    /// is enabled again.
    pub enabled: Option<bool>,
}

/// Body of `POST /v1/webhooks/{webhook_id}/rotate-secret`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing deliveries next to the new one: 0 to 604800
    /// (7 days). Default 0: the old secret stops at once.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 604800))]
    pub grace_seconds: u32,
}

/// An endpoint as the API shows it: never the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookView {
    /// `whk_...`.
    pub id: WebhookId,
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
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: i64,
}

impl WebhookView {
    pub(super) fn from_row(r: &EndpointRow) -> Self {
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
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedWebhook {
    /// The view.
    #[serde(flatten)]
    pub view: WebhookView,
    /// The signing secret (`whsec_...`). Store it now: it is never shown again.
    pub secret: String,
}

/// A rotated secret: the endpoint, the new secret (shown this once), and until when the old
/// one still signs. `Debug` leaves the secret out.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedSecret {
    /// The view.
    #[serde(flatten)]
    pub view: WebhookView,
    /// The new signing secret. Store it now: it is never shown again.
    pub secret: String,
    /// RFC 3339 end of the old secret's grace period; `null` when it stopped at once.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    /// Newest first.
    pub items: Vec<WebhookView>,
}

/// Query of `GET /v1/webhooks/{webhook_id}/deliveries`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only deliveries in this state.
    #[cfg_attr(feature = "openapi", param(value_type = Option<DeliveryStatus>))]
    pub status: Option<DeliveryStatus>,
    /// 1 to 200; default 50.
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[cfg_attr(feature = "openapi", param(pattern = "^(dlv_[0-9A-Za-z]{26})?$"))]
    pub cursor: Option<String>,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// `dlv_...`; also the `Keygate-Delivery-Id` header.
    pub id: DeliveryId,
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub next_attempt_at: Option<i64>,
    /// RFC 3339 time of the latest attempt.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_attempt_at: Option<i64>,
    /// HTTP status of the latest attempt; `null` when there was no response.
    pub last_status_code: Option<i64>,
    /// Why the latest attempt failed without a response (timeout, refused connection), or
    /// `endpoint deleted`.
    pub last_error: Option<String>,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
}

/// A page of deliveries.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, Queryable)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptView {
    /// 1, 2, ...
    pub attempt: i64,
    /// RFC 3339 time the request was sent.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: i64,
    /// HTTP status of the response; `null` when there was none.
    pub status_code: Option<i64>,
    /// Why there was no response.
    pub error: Option<String>,
    /// Milliseconds from sending to the response head (or the failure).
    pub duration_ms: i64,
}

/// An event as delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventView {
    /// `evt_...`.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
    /// The payload's `data`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// A delivery with its attempts and its event.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    pub id: DeliveryId,
    pub endpoint_id: WebhookId,
    pub event_id: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
}

impl DeliveryView {
    pub(super) fn from_row(r: DeliveryRow, event_type: String) -> Result<Self, StoreError> {
        Ok(DeliveryView {
            status: r.status,
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
