//! The evaluation job: which keys to look at, the figures each rule needs from the database,
//! and raising alerts (with the revocation a rule may ask for) in one transaction.

use std::collections::HashMap;

use diesel::prelude::*;
use keygate_shared::limits::period_start;
use keygate_shared::{Environment, KeyStatus, Kind};

use super::{
    get, judge, project_settings, AlertStatus, Finding, Observed, Rule, RuleSettings,
    BASELINE_SPAN_MS, DAY_MS, EVIDENCE_VALUES, HOUR_MS, SPIKE_MIN_REQUESTS,
};
use crate::db::models::KeyRow;
use crate::db::schema::{
    alert_rules, alerts, api_keys, key_sightings, key_usage, key_usage_daily, key_usage_hourly,
};
use crate::db::{write_tx, DbConn};
use crate::domain::keys::{self, KeyView};
use crate::domain::usage::Granularity;
use crate::domain::{audit, bump_version, events};
use crate::error::StoreError;
use crate::ids::{AlertId, KeyId, ProjectId};

fn usage_since(
    conn: &mut DbConn,
    key_id: &KeyId,
    since: i64,
    codes: &[&str],
) -> Result<i64, StoreError> {
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
    key_id: &KeyId,
    kind: &str,
    since: i64,
) -> Result<(i64, Vec<String>), StoreError> {
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

/// Gathers from the database the figures `rule` needs about one key over its window. `view`
/// is the key at `now`. The judgment itself is [`judge`].
fn gather(
    conn: &mut DbConn,
    rule: Rule,
    s: RuleSettings,
    row: &KeyRow,
    view: &KeyView,
    now: i64,
) -> Result<Observed, StoreError> {
    let since = now - s.window_seconds * 1000;
    Ok(match rule {
        Rule::NewIps if view.kind == Kind::Publishable => Observed::NotApplicable,
        Rule::NewIps | Rule::NewReferrers => {
            let kind = if rule == Rule::NewIps {
                "ip"
            } else {
                "referrer"
            };
            let (count, sample) = new_sightings(conn, &row.id, kind, since)?;
            Observed::NewValues { count, sample }
        }
        Rule::Rejections => Observed::Rejections {
            referrer: usage_since(conn, &row.id, since, &["referrer_not_allowed"])?,
            ip: usage_since(conn, &row.id, since, &["ip_not_allowed"])?,
        },
        Rule::TrafficSpike => {
            let recent = usage_since(conn, &row.id, since, &[])?;
            if recent < SPIKE_MIN_REQUESTS {
                // Cannot fire whatever the baseline: spare the query.
                return Ok(Observed::NotApplicable);
            }
            // Whole hours before the window, back to a week or the key's creation.
            let end = since.div_euclid(HOUR_MS) * HOUR_MS;
            let start = (now - BASELINE_SPAN_MS)
                .max(row.created_at)
                .div_euclid(HOUR_MS)
                * HOUR_MS;
            let rows: Vec<i64> = key_usage_hourly::table
                .filter(key_usage_hourly::key_id.eq(&row.id))
                .filter(key_usage_hourly::hour.ge(start))
                .filter(key_usage_hourly::hour.lt(end))
                .select(key_usage_hourly::count)
                .load(conn)?;
            Observed::Traffic {
                recent,
                baseline: rows.iter().sum(),
                baseline_span_ms: end - start,
            }
        }
        Rule::TestKeyOnLive if view.environment != Environment::Test => Observed::NotApplicable,
        Rule::TestKeyOnLive => Observed::TestKeyOnLive {
            refused: usage_since(conn, &row.id, since, &["environment_not_allowed"])?,
        },
        Rule::NearQuota => {
            let Some(quota) = view.quota else {
                return Ok(Observed::NotApplicable);
            };
            let used: Vec<i64> = key_usage_daily::table
                .filter(key_usage_daily::key_id.eq(&row.id))
                .filter(key_usage_daily::code.eq("valid"))
                .filter(key_usage_daily::day.ge(period_start(quota.period, now)))
                .select(key_usage_daily::count)
                .load(conn)?;
            Observed::QuotaUse {
                used: used.iter().sum(),
                limit: quota.limit.get() as i64,
                period: quota.period,
            }
        }
        Rule::NearExpiry => match row.expires_at {
            // A rotated key is being replaced already.
            Some(expires_at) if row.rotated_to.is_none() => Observed::Expiry { expires_at },
            _ => Observed::NotApplicable,
        },
    })
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
    key_id: &KeyId,
    rule: Rule,
    quiet_since: i64,
) -> Result<bool, StoreError> {
    let n: i64 = alerts::table
        .filter(alerts::key_id.eq(key_id))
        .filter(alerts::rule.eq(rule))
        .filter(
            alerts::status
                .eq(AlertStatus::Open)
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
) -> Result<Option<(String, bool)>, StoreError> {
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
        let id = AlertId::generate();
        diesel::insert_into(alerts::table)
            .values((
                alerts::id.eq(&id),
                alerts::project_id.eq(&view.project_id),
                alerts::key_id.eq(&view.id),
                alerts::rule.eq(rule),
                alerts::summary.eq(&finding.summary),
                alerts::details.eq(finding.details.to_string()),
                alerts::status.eq(AlertStatus::Open),
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
        Ok(Some((id.into_string(), revoke)))
    })
}

/// The keys worth evaluating at `now`: those with usage or new sightings within `lookback_ms`,
/// and live keys expiring within `expiry_ms`.
fn candidates(
    conn: &mut DbConn,
    now: i64,
    lookback_ms: i64,
    expiry_ms: i64,
) -> Result<Vec<KeyId>, StoreError> {
    let mut ids: Vec<KeyId> = key_usage::table
        .filter(key_usage::minute.ge(Granularity::Minute.floor(now - lookback_ms)))
        .select(key_usage::key_id)
        .distinct()
        .load(conn)?;
    ids.extend(
        key_sightings::table
            .filter(key_sightings::first_seen_at.ge(now - lookback_ms))
            .select(key_sightings::key_id)
            .distinct()
            .load::<KeyId>(conn)?,
    );
    ids.extend(
        api_keys::table
            .filter(api_keys::revoked_at.is_null())
            .filter(api_keys::expires_at.gt(now))
            .filter(api_keys::expires_at.le(now + expiry_ms))
            .select(api_keys::id)
            .load::<KeyId>(conn)?,
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
pub fn evaluate(conn: &mut DbConn, now: i64) -> Result<EvaluationReport, StoreError> {
    // Look back over the longest window any project set, and ahead over the longest expiry
    // warning.
    let custom: Vec<(Rule, i64, i64)> = alert_rules::table
        .filter(alert_rules::enabled.eq(true))
        .select((
            alert_rules::rule,
            alert_rules::threshold,
            alert_rules::window_seconds,
        ))
        .load(conn)?;
    let lookback_s = custom
        .iter()
        .filter(|(r, _, _)| !matches!(r, Rule::NearExpiry | Rule::NearQuota))
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
        .filter(|(r, _, _)| *r == Rule::NearExpiry)
        .map(|(_, t, _)| *t)
        .chain([Rule::NearExpiry.defaults().threshold])
        .max()
        .unwrap_or(7);
    let ids = candidates(conn, now, lookback_s * 1000, expiry_days * DAY_MS)?;
    let mut report = EvaluationReport {
        keys: ids.len(),
        ..Default::default()
    };
    let mut settings: HashMap<ProjectId, Vec<(Rule, RuleSettings, bool)>> = HashMap::new();
    for id in ids {
        let row = match keys::find_row(conn, &id) {
            Ok(r) => r,
            // Usage of a key id that does not exist (a stale edge): nothing to judge.
            Err(StoreError::NotFound(_)) => continue,
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
            let observed = gather(conn, rule, s, &row, &view, now)?;
            let Some(finding) = judge(rule, s, &observed, now) else {
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
                report.revoked.push(id.to_string());
                // A revoked key needs no further rules.
                break;
            }
        }
    }
    Ok(report)
}
