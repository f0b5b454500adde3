//! Alerts (list, acknowledge) and a project's alert rules (view, change).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::layout::{self, FieldErrors};
use super::session::{self, ConsoleError, Session};
use super::{field, field_error, html_response, redirect, submit, Form, Posted};
use crate::auth::Writers;
use crate::domain::alerts::{
    self as domain, Acknowledge, AlertQuery, AlertRuleUpdate, AlertStatus, AlertView, Rule,
};
use crate::domain::projects;
use crate::ids::{AlertId, ProjectId};
use crate::state::db;
use crate::state::AppState;

#[derive(Debug, Default, serde::Deserialize)]
struct Filters {
    status: Option<String>,
    key_id: Option<String>,
    project_id: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// GET /console/alerts
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let f: Filters = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let status_text = non_empty(f.status).unwrap_or_else(|| "open".to_owned());
    let status = match status_text.as_str() {
        "open" => Some(AlertStatus::Open),
        "acknowledged" => Some(AlertStatus::Acknowledged),
        _ => None,
    };
    let key_id = non_empty(f.key_id);
    let project_id = non_empty(f.project_id);
    let q = AlertQuery {
        status,
        key_id: key_id.clone(),
        project_id: project_id.clone(),
        limit: Some(200),
        ..Default::default()
    };
    let page = db(&state, move |c, _| domain::list(c, q)).await?;
    let back = req.uri().to_string();
    let statuses = [
        ("open", "Open"),
        ("acknowledged", "Acknowledged"),
        ("all", "All"),
    ];
    let body = html! {
        form.filters method="get" action="/console/alerts" role="search" {
            (layout::select("status", "Status", &statuses, &status_text, &FieldErrors::default()))
            div.field { label for="key_id" { "Key id" } input #key_id name="key_id" value=(key_id.as_deref().unwrap_or("")); }
            div.field { label for="project_id" { "Project id" } input #project_id name="project_id" value=(project_id.as_deref().unwrap_or("")); }
            button type="submit" { "Filter" }
        }
        (alert_table(&s, &page.items, &back))
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page("Alerts", Some(&s), body),
    ))
}

/// The alerts table, with acknowledge buttons for writers; `back` is where they return to.
pub fn alert_table(s: &Session, items: &[AlertView], back: &str) -> Markup {
    html! {
        @if items.is_empty() { p #no-alerts { "No alerts match." } }
        @else {
            div.table-wrap { table #alerts {
                caption { "Newest first (" (items.len()) ")" }
                thead { tr {
                    th scope="col" { "Raised" } th scope="col" { "Rule" } th scope="col" { "Key" }
                    th scope="col" { "What was seen" } th scope="col" { "Action" } th scope="col" { "Status" }
                } }
                tbody {
                    @for a in items {
                        tr.alert data-rule=(a.rule.as_str()) {
                            td { (layout::ts(a.raised_at)) }
                            td { code { (a.rule.as_str()) } }
                            td { a href=(format!("/console/keys/{}", a.key_id)) { code { (a.key_id) } } }
                            td.summary { (a.summary) }
                            td { @if let Some(act) = &a.action { strong.revoked { "key " (act) } } @else { "none" } }
                            td {
                                @if a.status == AlertStatus::Open {
                                    span.status-open { "open" }
                                    @if s.can_write() {
                                        form method="post" action=(format!("/console/alerts/{}/acknowledge", a.id)) {
                                            (layout::csrf(s))
                                            input type="hidden" name="back" value=(back);
                                            button type="submit" aria-label=(format!("Acknowledge alert {}", a.id)) { "Acknowledge" }
                                        }
                                    }
                                } @else {
                                    "acknowledged by " code { (a.acknowledged_by.as_deref().unwrap_or("")) }
                                    @if let Some(at) = a.acknowledged_at { " at " (layout::ts(at)) }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

/// Only local console paths are followed back to, so the field cannot redirect elsewhere.
fn safe_back(back: &str) -> &str {
    if back.starts_with("/console/") && !back.starts_with("//") {
        back
    } else {
        "/console/alerts"
    }
}

/// POST /console/alerts/{id}/acknowledge
pub async fn acknowledge(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let actor = session.admin_id.clone();
    let id = path.into_inner();
    let result = db(&state, move |c, now| {
        domain::acknowledge(c, now, &actor, &AlertId::new(id), Acknowledge::default())
    })
    .await;
    match result {
        // Acknowledged meanwhile by someone else: the list shows it.
        Ok(_) | Err(crate::error::ApiError::Conflict { .. }) => {
            Ok(redirect(safe_back(field(&form, "back"))))
        }
        Err(e) => Err(e.into()),
    }
}

async fn rules_page(
    s: &Session,
    state: &web::Data<AppState>,
    project_id: &str,
    errors: &FieldErrors,
    failed: Option<(Rule, &Form)>,
) -> Result<String, ConsoleError> {
    let pid = ProjectId::new(project_id);
    let (project, rules) = db(state, move |c, _| -> Result<_, keygate_store::StoreError> {
        let p = projects::get(c, &pid)?;
        let r = domain::list_rules(c, &pid)?;
        Ok((p, r))
    })
    .await?;
    let body = html! {
        p { "Rules run every few seconds over what the edges report. An alert explains what was seen; a rule set to revoke also revokes the key, and the audit log names the rule. "
            a href=(format!("/console/alerts?project_id={}&status=all", project.id)) { "This project's alerts" } }
        @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
        div.rules {
            @for r in &rules.items {
                @let name = r.rule.as_str();
                @let refill = failed.filter(|(fr, _)| *fr == r.rule).map(|(_, f)| f);
                @let value = |field_name: &str, current: String| refill.map_or(current, |f| super::field(f, field_name).to_owned());
                section.card.rule id=(format!("rule-{name}")) aria-labelledby=(format!("rule-{name}-h")) {
                    h2 id=(format!("rule-{name}-h")) { code { (name) } @if !r.enabled { " (off)" } }
                    p.hint { (r.description) }
                    @if s.can_write() {
                        form method="post" action=(format!("/console/projects/{}/alert-rules/{name}", project.id)) {
                            (layout::csrf(s))
                            div.field { label { input type="checkbox" name="enabled" value="on" checked[r.enabled]; " Enabled" } }
                            (layout::text_input(&format!("{name}-threshold"), &format!("Threshold ({})", r.threshold_unit), &value("threshold", r.threshold.to_string()), None, errors, true))
                            @if !matches!(r.rule, Rule::NearQuota | Rule::NearExpiry) {
                                (layout::text_input(&format!("{name}-window"), "Window (seconds)", &value("window", r.window_seconds.to_string()), None, errors, true))
                            }
                            @if r.can_auto_revoke {
                                div.field { label { input type="checkbox" name="auto_revoke" value="on" checked[r.auto_revoke]; " Revoke the key automatically" } }
                            }
                            button type="submit" { "Save " (name) }
                        }
                    } @else {
                        dl.facts {
                            dt { "Enabled" } dd { (if r.enabled { "yes" } else { "no" }) }
                            dt { "Threshold" } dd { (r.threshold) " " (r.threshold_unit) }
                            dt { "Window" } dd { (r.window_seconds) " s" }
                            dt { "Revokes keys" } dd { (if r.auto_revoke { "yes" } else { "no" }) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &format!("Alert rules: {}", project.name),
        Some(s),
        body,
    ))
}

/// GET /console/projects/{id}/alert-rules
pub async fn rules(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let id = path.into_inner();
    Ok(html_response(
        StatusCode::OK,
        rules_page(&s, &state, &id, &FieldErrors::default(), None).await?,
    ))
}

/// A number as JSON when it is one, else the text, so the API's validation names the field.
fn number_or_text(s: &str) -> Value {
    s.parse::<i64>().map_or_else(|_| json!(s), |n| json!(n))
}

/// POST /console/projects/{id}/alert-rules/{rule}
pub async fn update_rule(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    Posted { session, form, .. }: Posted<Writers>,
) -> Result<HttpResponse, ConsoleError> {
    let (project_id, rule_name) = path.into_inner();
    let rule = Rule::parse(&rule_name)
        .ok_or_else(|| ConsoleError::NotFound(format!("no alert rule {rule_name:?}")))?;
    let mut body = json!({
        "enabled": form.contains_key("enabled"),
        "threshold": number_or_text(field(&form, &format!("{rule_name}-threshold"))),
    });
    if !matches!(rule, Rule::NearQuota | Rule::NearExpiry) {
        body["window_seconds"] = number_or_text(field(&form, &format!("{rule_name}-window")));
    }
    if rule.can_auto_revoke() {
        body["auto_revoke"] = json!(form.contains_key("auto_revoke"));
    }
    let actor = session.admin_id.clone();
    let (pid, rn) = (project_id.clone(), rule_name.clone());
    let result = submit(&state, &body, move |c, now, input: AlertRuleUpdate| {
        domain::update_rule(c, now, &actor, &ProjectId::new(pid), &rn, input)
    })
    .await;
    match result {
        Ok(_) => Ok(redirect(&format!(
            "/console/projects/{project_id}/alert-rules#rule-{rule_name}"
        ))),
        Err(e) => {
            let prefix = rule_name.clone();
            let errors = field_error(e, |f| match f {
                "threshold" | "window_seconds" => f.to_owned(),
                _ => "form".to_owned(),
            })?;
            // Errors are keyed per rule, so only the failing rule's field shows them.
            let errors = FieldErrors(
                errors
                    .0
                    .into_iter()
                    .map(|(f, m)| match f.as_str() {
                        "threshold" => (format!("{prefix}-threshold"), m),
                        "window_seconds" => (format!("{prefix}-window"), m),
                        _ => (f, m),
                    })
                    .collect(),
            );
            let mut refill = form.clone();
            refill.insert(
                "threshold".to_owned(),
                field(&form, &format!("{rule_name}-threshold")).to_owned(),
            );
            refill.insert(
                "window".to_owned(),
                field(&form, &format!("{rule_name}-window")).to_owned(),
            );
            Ok(html_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                rules_page(
                    &session,
                    &state,
                    &project_id,
                    &errors,
                    Some((rule, &refill)),
                )
                .await?,
            ))
        }
    }
}
