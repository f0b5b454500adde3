//! Alert rules that flag a likely leak or abuse of a key, from what the edges report (verdict
//! counts per minute, hour and day, and the client IPs and referrer origins seen per key).
//!
//! A background job evaluates the rules of each project against every key with recent
//! activity or a coming expiry. A rule that fires raises an alert with a one-line explanation
//! and its evidence, records it in the audit log as done by `rule:<rule>`, emits
//! `alert.raised` to webhooks and, when the project set the rule to, revokes the key (the audit
//! log names the rule as the actor). Rules revoke only secret keys, and never on signals a client
//! forges (`Origin`, `Referer`): see docs/alerts.md. One alert per key and rule stays open until acknowledged;
//! an acknowledged one is raised again only after the rule's window has passed.

use std::collections::HashMap;

use diesel::prelude::*;
use keygate_shared::limits::period_start;
use keygate_shared::{Environment, KeyStatus, Kind, QuotaPeriod};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::keys::{self, KeyView};
use super::usage::Granularity;
use super::{audit, bump_version, events, projects, Page};
use crate::db::models::KeyRow;
use crate::db::schema::{
    alert_rules, alerts, api_keys, key_sightings, key_usage, key_usage_daily, key_usage_hourly,
};
use crate::db::{write_tx, DbConn};
use crate::error::ApiError;
use crate::ids::new_id;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// How far back `traffic_spike` looks for a key's normal traffic.
const BASELINE_SPAN_MS: i64 = 7 * DAY_MS;
/// Least history `traffic_spike` needs before it calls anything unusual.
const MIN_BASELINE_MS: i64 = DAY_MS;
/// Least traffic in the window for `traffic_spike` to fire: a jump from 1 to 20 requests is
/// not an incident.
pub const SPIKE_MIN_REQUESTS: i64 = 100;
/// Values quoted as evidence in an alert.
const EVIDENCE_VALUES: i64 = 10;

/// A rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A secret key used from many client IPs it was never used from before.
    NewIps,
    /// A key used from many referrer origins it was never used from before.
    NewReferrers,
    /// A burst of `referrer_not_allowed` and `ip_not_allowed` rejections.
    Rejections,
    /// Traffic far above the key's own baseline.
    TrafficSpike,
    /// A test key presented on a live host.
    TestKeyOnLive,
    /// A key close to its quota.
    NearQuota,
    /// A key close to its expiry.
    NearExpiry,
}

/// One rule's settings in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSettings {
    /// Whether the rule runs.
    pub enabled: bool,
    /// The rule's threshold (its unit depends on the rule).
    pub threshold: i64,
    /// The window looked at, in seconds.
    pub window_seconds: i64,
    /// Whether an alert of this rule revokes the key.
    pub auto_revoke: bool,
}

impl Rule {
    /// Every rule, in display order.
    pub const ALL: [Rule; 7] = [
        Rule::NewIps,
        Rule::NewReferrers,
        Rule::Rejections,
        Rule::TrafficSpike,
        Rule::TestKeyOnLive,
        Rule::NearQuota,
        Rule::NearExpiry,
    ];

    /// The rule's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NewIps => "new_ips",
            Rule::NewReferrers => "new_referrers",
            Rule::Rejections => "rejections",
            Rule::TrafficSpike => "traffic_spike",
            Rule::TestKeyOnLive => "test_key_on_live",
            Rule::NearQuota => "near_quota",
            Rule::NearExpiry => "near_expiry",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The settings a project has until it changes them.
    pub fn defaults(self) -> RuleSettings {
        let (threshold, window_seconds) = match self {
            Rule::NewIps => (10, 600),
            Rule::NewReferrers => (3, 600),
            Rule::Rejections => (20, 300),
            Rule::TrafficSpike => (10, 3600),
            Rule::TestKeyOnLive => (1, 600),
            Rule::NearQuota => (90, 3600),
            Rule::NearExpiry => (7, 86_400),
        };
        RuleSettings {
            enabled: true,
            threshold,
            window_seconds,
            auto_revoke: false,
        }
    }

    /// What the rule flags.
    pub fn description(self) -> &'static str {
        match self {
            Rule::NewIps => "A secret key is used, within the window, from at least the threshold number of client IPs never seen with it before. Publishable keys are exempt: every browser brings a new IP.",
            Rule::NewReferrers => "A key is used, within the window, from at least the threshold number of referrer origins never seen with it before.",
            Rule::Rejections => "Requests with the key refused as referrer_not_allowed or ip_not_allowed reach the threshold within the window.",
            Rule::TrafficSpike => "Requests with the key within the window reach the threshold times the key's own average for a window of that length over the previous 7 days (and at least 100). Needs a day of history.",
            Rule::TestKeyOnLive => "A test key is presented on hosts that serve live traffic as many times as the threshold, within the window.",
            Rule::NearQuota => "A key has used the threshold's percentage of its quota in the current period.",
            Rule::NearExpiry => "A key expires within the threshold's number of days (keys replaced by a rotation are exempt).",
        }
    }

    /// What the threshold counts.
    pub fn threshold_unit(self) -> &'static str {
        match self {
            Rule::NewIps => "new client IPs",
            Rule::NewReferrers => "new referrer origins",
            Rule::Rejections => "rejections",
            Rule::TrafficSpike => "times the baseline",
            Rule::TestKeyOnLive => "requests",
            Rule::NearQuota => "percent of the quota",
            Rule::NearExpiry => "days",
        }
    }

    /// Whether the rule may revoke keys: a key nearing its quota or expiry is not an attack, and
    /// `new_referrers` and `rejections` count what the `Origin` and `Referer` headers claim,
    /// which any client outside a browser writes as it likes.
    pub fn can_auto_revoke(self) -> bool {
        self.auto_revoke_refusal().is_none()
    }

    /// Why the rule may not revoke keys, if it may not.
    pub fn auto_revoke_refusal(self) -> Option<String> {
        match self {
            Rule::NearQuota | Rule::NearExpiry => Some(format!(
                "{} cannot revoke keys: nearing a limit is not an attack",
                self.as_str()
            )),
            Rule::NewReferrers | Rule::Rejections => Some(format!(
                "{} may alert but not revoke keys: it is fed by the Origin and Referer headers (and client IPs), which any client outside a browser forges, so revoking on it would let anyone revoke a key",
                self.as_str()
            )),
            _ => None,
        }
    }

    /// Whether the rule may revoke a key of this kind. A publishable key is public by design:
    /// it sits in web pages, so anyone can send requests with it from any address, with any
    /// `Origin`, `Referer` or `Host`, and so produce every pattern the rules look for. Rules
    /// alert on publishable keys but never revoke them.
    pub fn may_revoke(self, kind: Kind) -> bool {
        self.can_auto_revoke() && kind == Kind::Secret
    }

    fn threshold_range(self) -> (i64, i64) {
        match self {
            Rule::TrafficSpike => (2, 10_000),
            Rule::NearQuota => (1, 100),
            Rule::NearExpiry => (1, 365),
            _ => (1, 1_000_000),
        }
    }

    /// The actor that audit entries of this rule name.
    pub fn actor(self) -> String {
        format!("rule:{}", self.as_str())
    }
}

/// Shortest and longest rule window.
pub const WINDOW_SECONDS_RANGE: (i64, i64) = (60, 86_400);

// ---------------------------------------------------------------------------------------------
// Rule settings
// ---------------------------------------------------------------------------------------------

/// A rule as a project has it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlertRuleView {
    /// The rule.
    pub rule: Rule,
    /// Whether it runs.
    pub enabled: bool,
    /// Its threshold, in `threshold_unit`.
    pub threshold: i64,
    /// What the threshold counts.
    pub threshold_unit: String,
    /// The window looked at, in seconds (unused by `near_quota` and `near_expiry`).
    pub window_seconds: i64,
    /// Whether an alert of this rule revokes the key (secret keys only: publishable keys are
    /// never revoked by a rule).
    pub auto_revoke: bool,
    /// Whether the rule may be set to revoke keys (not `near_quota`, `near_expiry`, and not
    /// `new_referrers` and `rejections`, which forged headers can trigger).
    pub can_auto_revoke: bool,
    /// What the rule flags.
    pub description: String,
    /// `false` while the project uses the rule's defaults.
    pub customized: bool,
}

/// A project's rules.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertRuleList {
    /// Every rule, in a fixed order.
    pub items: Vec<AlertRuleView>,
}

/// Body of `PATCH /v1/projects/{project_id}/alert-rules/{rule}`: the fields to change.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleUpdate {
    /// Whether the rule runs.
    pub enabled: Option<bool>,
    /// The threshold, in the rule's unit.
    pub threshold: Option<i64>,
    /// 60 to 86400.
    pub window_seconds: Option<i64>,
    /// Revoke the key when the rule fires: secret keys only, and refused (422) for
    /// `near_quota`, `near_expiry`, `new_referrers` and `rejections`.
    pub auto_revoke: Option<bool>,
}

fn view_of(rule: Rule, s: RuleSettings, customized: bool) -> AlertRuleView {
    AlertRuleView {
        rule,
        enabled: s.enabled,
        threshold: s.threshold,
        threshold_unit: rule.threshold_unit().to_owned(),
        window_seconds: s.window_seconds,
        auto_revoke: s.auto_revoke && rule.can_auto_revoke(),
        can_auto_revoke: rule.can_auto_revoke(),
        description: rule.description().to_owned(),
        customized,
    }
}

type RuleRow = (String, bool, i64, i64, bool);

/// The settings of every rule of a project, defaults filled in.
fn project_settings(
    conn: &mut DbConn,
    project_id: &str,
) -> Result<Vec<(Rule, RuleSettings, bool)>, ApiError> {
    let rows: Vec<RuleRow> = alert_rules::table
        .filter(alert_rules::project_id.eq(project_id))
        .select((
            alert_rules::rule,
            alert_rules::enabled,
            alert_rules::threshold,
            alert_rules::window_seconds,
            alert_rules::auto_revoke,
        ))
        .load(conn)?;
    Ok(Rule::ALL
        .into_iter()
        .map(|rule| match rows.iter().find(|r| r.0 == rule.as_str()) {
            Some(&(_, enabled, threshold, window_seconds, auto_revoke)) => (
                rule,
                RuleSettings {
                    enabled,
                    threshold,
                    window_seconds,
                    auto_revoke,
                },
                true,
            ),
            None => (rule, rule.defaults(), false),
        })
        .collect())
}

/// A project's rules.
pub fn list_rules(conn: &mut DbConn, project_id: &str) -> Result<AlertRuleList, ApiError> {
    projects::find_row(conn, project_id)?;
    Ok(AlertRuleList {
        items: project_settings(conn, project_id)?
            .into_iter()
            .map(|(rule, s, customized)| view_of(rule, s, customized))
            .collect(),
    })
}

fn parse_rule(name: &str) -> Result<Rule, ApiError> {
    Rule::parse(name).ok_or_else(|| ApiError::not_found("alert rule", name))
}

/// Changes one rule of a project.
pub fn update_rule(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    project_id: &str,
    rule_name: &str,
    input: AlertRuleUpdate,
) -> Result<AlertRuleView, ApiError> {
    let rule = parse_rule(rule_name)?;
    write_tx(conn, |conn| {
        projects::find_row(conn, project_id)?;
        let (_, before, customized) = project_settings(conn, project_id)?
            .into_iter()
            .find(|(r, _, _)| *r == rule)
            .ok_or_else(|| ApiError::not_found("alert rule", rule_name))?;
        let after = RuleSettings {
            enabled: input.enabled.unwrap_or(before.enabled),
            threshold: input.threshold.unwrap_or(before.threshold),
            window_seconds: input.window_seconds.unwrap_or(before.window_seconds),
            auto_revoke: input.auto_revoke.unwrap_or(before.auto_revoke),
        };
        let (lo, hi) = rule.threshold_range();
        if !(lo..=hi).contains(&after.threshold) {
            return Err(ApiError::validation(
                "threshold",
                format!("must be between {lo} and {hi} for {}", rule.as_str()),
            ));
        }
        let (wlo, whi) = WINDOW_SECONDS_RANGE;
        if !(wlo..=whi).contains(&after.window_seconds) {
            return Err(ApiError::validation(
                "window_seconds",
                format!("must be between {wlo} and {whi}"),
            ));
        }
        if after.auto_revoke {
            if let Some(why) = rule.auto_revoke_refusal() {
                return Err(ApiError::validation("auto_revoke", why));
            }
        }
        let values = (
            alert_rules::project_id.eq(project_id),
            alert_rules::rule.eq(rule.as_str()),
            alert_rules::enabled.eq(after.enabled),
            alert_rules::threshold.eq(after.threshold),
            alert_rules::window_seconds.eq(after.window_seconds),
            alert_rules::auto_revoke.eq(after.auto_revoke),
            alert_rules::updated_at.eq(now),
        );
        if customized {
            diesel::update(alert_rules::table.find((project_id, rule.as_str())))
                .set(values)
                .execute(conn)?;
        } else {
            diesel::insert_into(alert_rules::table)
                .values(values)
                .execute(conn)?;
        }
        let before_view = view_of(rule, before, customized);
        let view = view_of(rule, after, true);
        audit::record(
            conn,
            now,
            actor,
            "alert_rule.update",
            project_id,
            serde_json::json!({ "rule": rule, "before": before_view, "after": view }),
        )?;
        Ok(view)
    })
}

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------

/// `open` until someone acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Not yet looked at.
    Open,
    /// Looked at.
    Acknowledged,
}

impl AlertStatus {
    fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
        }
    }
}

/// An alert.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    /// `alr_...`.
    pub id: String,
    /// The key's project.
    pub project_id: String,
    /// The key.
    pub key_id: String,
    /// The rule that fired.
    pub rule: Rule,
    /// One line: what was seen.
    pub summary: String,
    /// The evidence: counts, thresholds, sample values.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// `open` or `acknowledged`.
    pub status: AlertStatus,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub raised_at: i64,
    /// RFC 3339, or null.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acknowledged_at: Option<i64>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// `revoked` when the rule revoked the key; null otherwise.
    pub action: Option<String>,
}

/// A page of alerts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertPage {
    /// Newest first.
    pub items: Vec<AlertView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/alerts`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `open` or `acknowledged`; default both.
    #[param(value_type = Option<AlertStatus>)]
    pub status: Option<AlertStatus>,
    /// Only this project's alerts.
    pub project_id: Option<String>,
    /// Only this key's alerts.
    pub key_id: Option<String>,
    /// Only this rule's alerts.
    #[param(value_type = Option<Rule>)]
    pub rule: Option<Rule>,
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^(alr_[0-9A-Za-z]{26})?$")]
    pub cursor: Option<String>,
}

/// Body of `POST /v1/alerts/{alert_id}/acknowledge`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    /// Kept in the audit log.
    pub note: Option<String>,
}

type AlertRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn alert_of(r: AlertRow) -> Result<AlertView, ApiError> {
    let (id, project_id, key_id, rule, summary, details, status, raised_at, ack_at, ack_by, action) =
        r;
    Ok(AlertView {
        rule: Rule::parse(&rule)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored rule {rule:?}")))?,
        status: if status == "acknowledged" {
            AlertStatus::Acknowledged
        } else {
            AlertStatus::Open
        },
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        id,
        project_id,
        key_id,
        summary,
        raised_at,
        acknowledged_at: ack_at,
        acknowledged_by: ack_by,
        action,
    })
}

macro_rules! alert_columns {
    () => {
        (
            alerts::id,
            alerts::project_id,
            alerts::key_id,
            alerts::rule,
            alerts::summary,
            alerts::details,
            alerts::status,
            alerts::raised_at,
            alerts::acknowledged_at,
            alerts::acknowledged_by,
            alerts::action,
        )
    };
}

/// Lists alerts, newest first.
pub fn list(conn: &mut DbConn, q: AlertQuery) -> Result<AlertPage, ApiError> {
    let page = Page::parse(q.limit, q.cursor, "alr")?;
    let mut query = alerts::table.select(alert_columns!()).into_boxed();
    if let Some(s) = q.status {
        query = query.filter(alerts::status.eq(s.as_str()));
    }
    if let Some(p) = q.project_id {
        query = query.filter(alerts::project_id.eq(p));
    }
    if let Some(k) = q.key_id {
        query = query.filter(alerts::key_id.eq(k));
    }
    if let Some(r) = q.rule {
        query = query.filter(alerts::rule.eq(r.as_str()));
    }
    if let Some(b) = &page.before {
        query = query.filter(alerts::id.lt(b.clone()));
    }
    let rows: Vec<AlertRow> = query
        .order(alerts::id.desc())
        .limit(page.limit + 1)
        .load(conn)?;
    let (rows, next_cursor) = page.finish(rows, |r| &r.0);
    Ok(AlertPage {
        items: rows.into_iter().map(alert_of).collect::<Result<_, _>>()?,
        next_cursor,
    })
}

/// One alert.
pub fn get(conn: &mut DbConn, id: &str) -> Result<AlertView, ApiError> {
    let rows: Vec<AlertRow> = alerts::table.find(id).select(alert_columns!()).load(conn)?;
    rows.into_iter()
        .next()
        .map(alert_of)
        .transpose()?
        .ok_or_else(|| ApiError::not_found("alert", id))
}

/// Marks an alert as looked at.
pub fn acknowledge(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &str,
    input: Acknowledge,
) -> Result<AlertView, ApiError> {
    let note = input
        .note
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 500) {
        return Err(ApiError::validation(
            "note",
            "must be at most 500 characters",
        ));
    }
    write_tx(conn, |conn| {
        let alert = get(conn, id)?;
        if alert.status == AlertStatus::Acknowledged {
            return Err(ApiError::Conflict {
                code: "already_acknowledged",
                detail: format!("alert {id:?} is already acknowledged"),
            });
        }
        diesel::update(alerts::table.find(id))
            .set((
                alerts::status.eq(AlertStatus::Acknowledged.as_str()),
                alerts::acknowledged_at.eq(Some(now)),
                alerts::acknowledged_by.eq(Some(actor)),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            now,
            actor,
            "alert.acknowledge",
            id,
            serde_json::json!({ "key_id": alert.key_id, "rule": alert.rule, "note": note }),
        )?;
        get(conn, id)
    })
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// What a rule found.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// One line.
    pub summary: String,
    /// Evidence.
    pub details: serde_json::Value,
}

fn window_text(seconds: i64) -> String {
    match seconds {
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3600 == 0 => plural(s / 3600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// The `traffic_spike` decision: `recent` requests in the window against `baseline_total`
/// requests over `baseline_span_ms` of history before it. Returns the ratio when it fires.
pub fn spike_ratio(
    recent: i64,
    baseline_total: i64,
    baseline_span_ms: i64,
    window_ms: i64,
    factor: i64,
) -> Option<f64> {
    if baseline_span_ms < MIN_BASELINE_MS || recent < SPIKE_MIN_REQUESTS || window_ms <= 0 {
        return None;
    }
    // A quiet key's baseline is at least one request per window, so "10x" of nothing is
    // still ten requests, not any request at all.
    let per_window = (baseline_total as f64 * window_ms as f64 / baseline_span_ms as f64).max(1.0);
    let ratio = recent as f64 / per_window;
    (ratio >= factor as f64).then_some(ratio)
}

fn usage_since(
    conn: &mut DbConn,
    key_id: &str,
    since: i64,
    codes: &[&str],
) -> Result<i64, ApiError> {
    let mut q = key_usage::table
        .filter(key_usage::key_id.eq(key_id))
        .filter(key_usage::minute.ge(Granularity::Minute.floor(since)))
        .select(key_usage::count)
        .into_boxed();
    if !codes.is_empty() {
        q = q.filter(key_usage::code.eq_any(codes.to_vec()));
    }
    // Summed here: SUM of BIGINT is NUMERIC on PostgreSQL and INTEGER on SQLite.
    Ok(q.load::<i64>(conn)?.iter().sum())
}

fn new_sightings(
    conn: &mut DbConn,
    key_id: &str,
    kind: &str,
    since: i64,
) -> Result<(i64, Vec<String>), ApiError> {
    let base = key_sightings::table
        .filter(key_sightings::key_id.eq(key_id))
        .filter(key_sightings::kind.eq(kind))
        .filter(key_sightings::first_seen_at.ge(since));
    let count: i64 = base.count().get_result(conn)?;
    let sample: Vec<String> = base
        .order(key_sightings::first_seen_at.desc())
        .select(key_sightings::value)
        .limit(EVIDENCE_VALUES)
        .load(conn)?;
    Ok((count, sample))
}

/// Evaluates one rule for one key. `view` is the key at `now`.
fn check(
    conn: &mut DbConn,
    rule: Rule,
    s: RuleSettings,
    row: &KeyRow,
    view: &KeyView,
    now: i64,
) -> Result<Option<Finding>, ApiError> {
    let window_ms = s.window_seconds * 1000;
    let since = now - window_ms;
    let win = window_text(s.window_seconds);
    Ok(match rule {
        Rule::NewIps | Rule::NewReferrers => {
            if rule == Rule::NewIps && view.kind == Kind::Publishable {
                return Ok(None);
            }
            let (kind, what) = if rule == Rule::NewIps {
                ("ip", "client IPs")
            } else {
                ("referrer", "referrer origins")
            };
            let (count, sample) = new_sightings(conn, &row.id, kind, since)?;
            (count >= s.threshold).then(|| Finding {
                summary: format!(
                    "Used from {count} {what} never seen before for this key in {win} (threshold {}), including {}.",
                    s.threshold,
                    sample.join(", ")
                ),
                details: serde_json::json!({
                    "new_values": count,
                    "sample": sample,
                    "threshold": s.threshold,
                    "window_seconds": s.window_seconds,
                }),
            })
        }
        Rule::Rejections => {
            let referrer = usage_since(conn, &row.id, since, &["referrer_not_allowed"])?;
            let ip = usage_since(conn, &row.id, since, &["ip_not_allowed"])?;
            let total = referrer + ip;
            (total >= s.threshold).then(|| Finding {
                summary: format!(
                    "{total} requests refused in {win} ({referrer} referrer_not_allowed, {ip} ip_not_allowed; threshold {}): someone is trying the key from where it may not be used.",
                    s.threshold
                ),
                details: serde_json::json!({
                    "referrer_not_allowed": referrer,
                    "ip_not_allowed": ip,
                    "threshold": s.threshold,
                    "window_seconds": s.window_seconds,
                }),
            })
        }
        Rule::TrafficSpike => {
            let recent = usage_since(conn, &row.id, since, &[])?;
            if recent < SPIKE_MIN_REQUESTS {
                return Ok(None);
            }
            // Whole hours before the window, back to a week or the key's creation.
            let end = since.div_euclid(HOUR_MS) * HOUR_MS;
            let start = (now - BASELINE_SPAN_MS)
                .max(row.created_at)
                .div_euclid(HOUR_MS)
                * HOUR_MS;
            let span = end - start;
            let rows: Vec<i64> = key_usage_hourly::table
                .filter(key_usage_hourly::key_id.eq(&row.id))
                .filter(key_usage_hourly::hour.ge(start))
                .filter(key_usage_hourly::hour.lt(end))
                .select(key_usage_hourly::count)
                .load(conn)?;
            let baseline: i64 = rows.iter().sum();
            spike_ratio(recent, baseline, span, window_ms, s.threshold).map(|ratio| {
                let per_window = baseline as f64 * window_ms as f64 / span as f64;
                Finding {
                    summary: format!(
                        "{recent} requests in {win}, {ratio:.0} times the key's usual {per_window:.1} (threshold {}x).",
                        s.threshold
                    ),
                    details: serde_json::json!({
                        "requests": recent,
                        "baseline_per_window": per_window,
                        "ratio": ratio,
                        "baseline_hours": span / HOUR_MS,
                        "threshold": s.threshold,
                        "window_seconds": s.window_seconds,
                    }),
                }
            })
        }
        Rule::TestKeyOnLive => {
            if view.environment != Environment::Test {
                return Ok(None);
            }
            let n = usage_since(conn, &row.id, since, &["environment_not_allowed"])?;
            (n >= s.threshold).then(|| Finding {
                summary: format!(
                    "This test key was presented {n} times on live hosts in {win}: test keys often end up in code that ships."
                ),
                details: serde_json::json!({
                    "environment_not_allowed": n,
                    "threshold": s.threshold,
                    "window_seconds": s.window_seconds,
                }),
            })
        }
        Rule::NearQuota => {
            let Some(quota) = view.quota else {
                return Ok(None);
            };
            let limit = quota.limit.get() as i64;
            let mut q = key_usage_daily::table
                .filter(key_usage_daily::key_id.eq(&row.id))
                .filter(key_usage_daily::code.eq("valid"))
                .select(key_usage_daily::count)
                .into_boxed();
            q = q.filter(key_usage_daily::day.ge(period_start(quota.period, now)));
            let used: i64 = q.load::<i64>(conn)?.iter().sum();
            let percent = used.saturating_mul(100) / limit.max(1);
            (percent >= s.threshold).then(|| Finding {
                summary: format!(
                    "Used {used} of its {limit} quota this {} ({percent}%, threshold {}%).",
                    period_text(quota.period),
                    s.threshold
                ),
                details: serde_json::json!({
                    "used": used,
                    "limit": limit,
                    "period": quota.period,
                    "percent": percent,
                    "threshold": s.threshold,
                }),
            })
        }
        Rule::NearExpiry => {
            let Some(expires_at) = row.expires_at else {
                return Ok(None);
            };
            if row.rotated_to.is_some() || expires_at <= now {
                return Ok(None);
            }
            let left = expires_at - now;
            (left <= s.threshold * DAY_MS).then(|| Finding {
                summary: format!(
                    "Expires on {} ({} left; threshold {}).",
                    crate::timefmt::format_ms(expires_at),
                    duration_text(left),
                    plural(s.threshold, "day")
                ),
                details: serde_json::json!({
                    "expires_at": crate::timefmt::format_ms(expires_at),
                    "threshold": s.threshold,
                }),
            })
        }
    })
}

fn period_text(p: QuotaPeriod) -> &'static str {
    match p {
        QuotaPeriod::Day => "day",
        QuotaPeriod::Month => "month",
        QuotaPeriod::Total => "lifetime",
    }
}

fn duration_text(ms: i64) -> String {
    if ms >= DAY_MS {
        plural(ms / DAY_MS, "day")
    } else if ms >= HOUR_MS {
        plural(ms / HOUR_MS, "hour")
    } else {
        plural((ms / MINUTE_MS).max(1), "minute")
    }
}

/// Since when an earlier alert of `rule` for a key keeps a new one from being raised: an open
/// alert always does; an acknowledged one for the rule's window, or for `near_quota` the
/// current quota period, or for `near_expiry` the rest of the key's life.
fn quiet_since(rule: Rule, s: RuleSettings, view: &KeyView, now: i64) -> i64 {
    match rule {
        Rule::NearQuota => view.quota.map_or(i64::MIN, |q| period_start(q.period, now)),
        Rule::NearExpiry => i64::MIN,
        _ => now - s.window_seconds * 1000,
    }
}

fn already_alerted(
    conn: &mut DbConn,
    key_id: &str,
    rule: Rule,
    quiet_since: i64,
) -> Result<bool, ApiError> {
    let n: i64 = alerts::table
        .filter(alerts::key_id.eq(key_id))
        .filter(alerts::rule.eq(rule.as_str()))
        .filter(
            alerts::status
                .eq(AlertStatus::Open.as_str())
                .or(alerts::raised_at.ge(quiet_since)),
        )
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Raises an alert (with its audit entry and `alert.raised` event) unless one is already
/// standing, and when `revoke` is set revokes the key in the same transaction, so the alert,
/// the revocation and both events commit together or not at all. Returns the alert's id and
/// whether the key was revoked.
fn raise(
    conn: &mut DbConn,
    now: i64,
    rule: Rule,
    s: RuleSettings,
    view: &KeyView,
    finding: &Finding,
    revoke: bool,
) -> Result<Option<(String, bool)>, ApiError> {
    write_tx(conn, |conn| {
        if revoke {
            // First statement of a transaction that changes a key: orders it among the other
            // writers and gives the revocation its snapshot version.
            bump_version(conn)?;
        }
        // Checked again under the write lock: two replicas evaluating at once raise one alert.
        if already_alerted(conn, &view.id, rule, quiet_since(rule, s, view, now))? {
            return Ok(None);
        }
        let row = keys::find_row(conn, &view.id)?;
        // Revoked or expired meanwhile: nothing left to judge.
        if KeyView::from_row(&row, now)?.status != KeyStatus::Active {
            return Ok(None);
        }
        let id = new_id("alr");
        diesel::insert_into(alerts::table)
            .values((
                alerts::id.eq(&id),
                alerts::project_id.eq(&view.project_id),
                alerts::key_id.eq(&view.id),
                alerts::rule.eq(rule.as_str()),
                alerts::summary.eq(&finding.summary),
                alerts::details.eq(finding.details.to_string()),
                alerts::status.eq(AlertStatus::Open.as_str()),
                alerts::raised_at.eq(now),
                alerts::action.eq(revoke.then_some("revoked")),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            now,
            &rule.actor(),
            "alert.raise",
            &view.id,
            serde_json::json!({ "alert_id": id, "rule": rule, "summary": finding.summary }),
        )?;
        let mut key = view.clone();
        if revoke {
            let reason: String = format!(
                "automatically revoked by alert rule {}: {}",
                rule.as_str(),
                finding.summary
            )
            .chars()
            .take(keys::MAX_REASON_CHARS)
            .collect();
            let mut extra = serde_json::Map::new();
            extra.insert("alert_id".to_owned(), serde_json::json!(id));
            key = keys::mark_revoked(conn, now, &rule.actor(), &row, Some(reason), extra)?;
        }
        let alert = get(conn, &id)?;
        events::emit(
            conn,
            now,
            events::ALERT_RAISED,
            &serde_json::json!({ "alert": alert, "key": key }),
        )?;
        Ok(Some((id, revoke)))
    })
}

/// The keys worth evaluating at `now`: those with usage or new sightings within `lookback_ms`,
/// and live keys expiring within `expiry_ms`.
fn candidates(
    conn: &mut DbConn,
    now: i64,
    lookback_ms: i64,
    expiry_ms: i64,
) -> Result<Vec<String>, ApiError> {
    let mut ids: Vec<String> = key_usage::table
        .filter(key_usage::minute.ge(Granularity::Minute.floor(now - lookback_ms)))
        .select(key_usage::key_id)
        .distinct()
        .load(conn)?;
    ids.extend(
        key_sightings::table
            .filter(key_sightings::first_seen_at.ge(now - lookback_ms))
            .select(key_sightings::key_id)
            .distinct()
            .load::<String>(conn)?,
    );
    ids.extend(
        api_keys::table
            .filter(api_keys::revoked_at.is_null())
            .filter(api_keys::expires_at.gt(now))
            .filter(api_keys::expires_at.le(now + expiry_ms))
            .select(api_keys::id)
            .load::<String>(conn)?,
    );
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// What one evaluation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvaluationReport {
    /// Keys looked at.
    pub keys: usize,
    /// Alerts raised.
    pub raised: Vec<String>,
    /// Keys revoked by rules.
    pub revoked: Vec<String>,
}

/// Evaluates every project's rules against every key worth looking at.
pub fn evaluate(conn: &mut DbConn, now: i64) -> Result<EvaluationReport, ApiError> {
    // Look back over the longest window any project set, and ahead over the longest expiry
    // warning.
    let custom: Vec<(String, i64, i64)> = alert_rules::table
        .filter(alert_rules::enabled.eq(true))
        .select((
            alert_rules::rule,
            alert_rules::threshold,
            alert_rules::window_seconds,
        ))
        .load(conn)?;
    let lookback_s = custom
        .iter()
        .filter(|(r, _, _)| r != Rule::NearExpiry.as_str() && r != Rule::NearQuota.as_str())
        .map(|(_, _, w)| *w)
        .chain(
            Rule::ALL
                .into_iter()
                .filter(|r| !matches!(r, Rule::NearExpiry | Rule::NearQuota))
                .map(|r| r.defaults().window_seconds),
        )
        .max()
        .unwrap_or(3600);
    let expiry_days = custom
        .iter()
        .filter(|(r, _, _)| r == Rule::NearExpiry.as_str())
        .map(|(_, t, _)| *t)
        .chain([Rule::NearExpiry.defaults().threshold])
        .max()
        .unwrap_or(7);
    let ids = candidates(conn, now, lookback_s * 1000, expiry_days * DAY_MS)?;
    let mut report = EvaluationReport {
        keys: ids.len(),
        ..Default::default()
    };
    let mut settings: HashMap<String, Vec<(Rule, RuleSettings, bool)>> = HashMap::new();
    for id in ids {
        let row = match keys::find_row(conn, &id) {
            Ok(r) => r,
            // Usage of a key id that does not exist (a stale edge): nothing to judge.
            Err(ApiError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let view = KeyView::from_row(&row, now)?;
        if view.status != KeyStatus::Active {
            continue;
        }
        if !settings.contains_key(&row.project_id) {
            let s = project_settings(conn, &row.project_id)?;
            settings.insert(row.project_id.clone(), s);
        }
        let rules = settings.get(&row.project_id).cloned().unwrap_or_default();
        for (rule, s, _) in rules {
            if !s.enabled {
                continue;
            }
            if already_alerted(conn, &id, rule, quiet_since(rule, s, &view, now))? {
                continue;
            }
            let Some(finding) = check(conn, rule, s, &row, &view, now)? else {
                continue;
            };
            // A setting stored before a rule lost the right to revoke stays inert.
            let revoke = s.auto_revoke && rule.may_revoke(view.kind);
            let Some((alert_id, revoked)) = raise(conn, now, rule, s, &view, &finding, revoke)?
            else {
                continue;
            };
            tracing::warn!(key_id = %id, rule = rule.as_str(), alert_id = %alert_id, revoked, "alert raised");
            report.raised.push(alert_id);
            if revoked {
                report.revoked.push(id.clone());
                // A revoked key needs no further rules.
                break;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_and_have_sane_defaults() {
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.as_str()), Some(r));
            let d = r.defaults();
            let (lo, hi) = r.threshold_range();
            assert!((lo..=hi).contains(&d.threshold), "{r:?}");
            assert!(!d.auto_revoke);
        }
        assert_eq!(Rule::parse("nope"), None);
        assert!(!Rule::NearQuota.can_auto_revoke());
        assert!(Rule::NewIps.can_auto_revoke());
    }

    #[test]
    fn spikes_need_history_volume_and_the_factor() {
        let hour = HOUR_MS;
        // 7 days at 10 per hour, then 1000 in an hour: 100x.
        assert_eq!(
            spike_ratio(1000, 7 * 24 * 10, 7 * DAY_MS, hour, 10).map(f64::round),
            Some(100.0)
        );
        // 5x is under a 10x threshold.
        assert_eq!(spike_ratio(500, 7 * 24 * 100, 7 * DAY_MS, hour, 10), None);
        // Under a day of history: no judgement.
        assert_eq!(spike_ratio(100_000, 10, 12 * hour, hour, 10), None);
        // Too little traffic to matter, whatever the ratio.
        assert_eq!(spike_ratio(99, 0, 7 * DAY_MS, hour, 10), None);
        // A silent key: the baseline counts as one per window.
        assert!(spike_ratio(100, 0, 7 * DAY_MS, hour, 10).is_some());
    }

    #[test]
    fn windows_read_naturally() {
        assert_eq!(window_text(600), "10 minutes");
        assert_eq!(window_text(3600), "1 hour");
        assert_eq!(window_text(86_400), "1 day");
        assert_eq!(window_text(90), "90 seconds");
    }
}
