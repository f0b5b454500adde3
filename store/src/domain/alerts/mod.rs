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
//!
//! Rules and their settings per project are here; raised alerts in [`raised`]; the judgment
//! of one rule over gathered figures, a pure function, in [`judge`]; the job that gathers the
//! figures and raises alerts in [`evaluate`].

mod evaluate;
mod judge;
mod raised;

pub use evaluate::{evaluate, EvaluationReport};
pub use judge::{judge, spike_ratio, Finding, Observed};
pub use raised::{
    acknowledge, get, list, Acknowledge, AlertPage, AlertQuery, AlertStatus, AlertView,
};

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::sql_types::Text;
use keygate_shared::Kind;
use serde::{Deserialize, Serialize};

use super::{audit, projects};
use crate::db::schema::alert_rules;
use crate::db::{write_tx, DbConn};
use crate::error::StoreError;
use crate::ids::ProjectId;

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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

keygate_shared::text_column!(Rule, Rule::parse, Rule::as_str);

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

/// A rule as a project has it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertRuleList {
    /// Every rule, in a fixed order.
    pub items: Vec<AlertRuleView>,
}

/// Body of `PATCH /v1/projects/{project_id}/alert-rules/{rule}`: the fields to change.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// A project's settings of one rule, as stored.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = alert_rules)]
struct RuleRow {
    rule: Rule,
    enabled: bool,
    threshold: i64,
    window_seconds: i64,
    auto_revoke: bool,
}

/// The settings of every rule of a project, defaults filled in.
fn project_settings(
    conn: &mut DbConn,
    project_id: &ProjectId,
) -> Result<Vec<(Rule, RuleSettings, bool)>, StoreError> {
    let rows: Vec<RuleRow> = alert_rules::table
        .filter(alert_rules::project_id.eq(project_id))
        .select(RuleRow::as_select())
        .load(conn)?;
    Ok(Rule::ALL
        .into_iter()
        .map(|rule| match rows.iter().find(|r| r.rule == rule) {
            Some(r) => (
                rule,
                RuleSettings {
                    enabled: r.enabled,
                    threshold: r.threshold,
                    window_seconds: r.window_seconds,
                    auto_revoke: r.auto_revoke,
                },
                true,
            ),
            None => (rule, rule.defaults(), false),
        })
        .collect())
}

/// A project's rules.
pub fn list_rules(conn: &mut DbConn, project_id: &ProjectId) -> Result<AlertRuleList, StoreError> {
    projects::find_row(conn, project_id)?;
    Ok(AlertRuleList {
        items: project_settings(conn, project_id)?
            .into_iter()
            .map(|(rule, s, customized)| view_of(rule, s, customized))
            .collect(),
    })
}

fn parse_rule(name: &str) -> Result<Rule, StoreError> {
    Rule::parse(name).ok_or_else(|| StoreError::not_found("alert rule", name))
}

/// Changes one rule of a project.
pub fn update_rule(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    project_id: &ProjectId,
    rule_name: &str,
    input: AlertRuleUpdate,
) -> Result<AlertRuleView, StoreError> {
    let rule = parse_rule(rule_name)?;
    write_tx(conn, |conn| {
        projects::find_row(conn, project_id)?;
        let (_, before, customized) = project_settings(conn, project_id)?
            .into_iter()
            .find(|(r, _, _)| *r == rule)
            .ok_or_else(|| StoreError::not_found("alert rule", rule_name))?;
        let after = RuleSettings {
            enabled: input.enabled.unwrap_or(before.enabled),
            threshold: input.threshold.unwrap_or(before.threshold),
            window_seconds: input.window_seconds.unwrap_or(before.window_seconds),
            auto_revoke: input.auto_revoke.unwrap_or(before.auto_revoke),
        };
        let (lo, hi) = rule.threshold_range();
        if !(lo..=hi).contains(&after.threshold) {
            return Err(StoreError::validation(
                "threshold",
                format!("must be between {lo} and {hi} for {}", rule.as_str()),
            ));
        }
        let (wlo, whi) = WINDOW_SECONDS_RANGE;
        if !(wlo..=whi).contains(&after.window_seconds) {
            return Err(StoreError::validation(
                "window_seconds",
                format!("must be between {wlo} and {whi}"),
            ));
        }
        if after.auto_revoke {
            if let Some(why) = rule.auto_revoke_refusal() {
                return Err(StoreError::validation("auto_revoke", why));
            }
        }
        let values = (
            alert_rules::project_id.eq(project_id),
            alert_rules::rule.eq(rule),
            alert_rules::enabled.eq(after.enabled),
            alert_rules::threshold.eq(after.threshold),
            alert_rules::window_seconds.eq(after.window_seconds),
            alert_rules::auto_revoke.eq(after.auto_revoke),
            alert_rules::updated_at.eq(now),
        );
        if customized {
            diesel::update(alert_rules::table.find((project_id, rule)))
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
}
