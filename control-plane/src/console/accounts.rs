//! The audit log, snapshot status, and admins and tokens (owners only).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde_json::json;

use super::layout::{self, FieldErrors};
use super::session::{self, ConsoleError, Session};
use super::{field, field_error, html_response, redirect, submit, Posted};
use crate::auth::{AnyRole, Owners};
use crate::domain::accounts::{self as domain, CreateAdmin, CreateToken};
use crate::domain::audit::{self, AuditQuery};
use crate::ids::{AdminId, TokenId};
use crate::routes::db;
use crate::state::AppState;

#[derive(Debug, Default, serde::Deserialize)]
struct AuditFilters {
    target_id: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    cursor: Option<String>,
}

/// Entries per page of the console's audit log.
const AUDIT_PAGE: i64 = 100;

/// GET /console/audit
pub async fn audit(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let f: AuditFilters = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let trimmed = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_owned();
    let (target, action, actor) = (trimmed(&f.target_id), trimmed(&f.action), trimmed(&f.actor));
    let query = AuditQuery {
        target_id: Some(target.clone()).filter(|t| !t.is_empty()),
        action: Some(action.clone()).filter(|a| !a.is_empty()),
        actor: Some(actor.clone()).filter(|a| !a.is_empty()),
        limit: Some(AUDIT_PAGE),
        cursor: f.cursor.clone().filter(|c| !c.is_empty()),
    };
    let first_page = query.cursor.is_none();
    let page = db(&state, move |c, _| audit::list(c, query)).await?;
    let items = page.items;
    let older = page.next_cursor.map(|cursor| {
        let q = serde_urlencoded::to_string([
            ("target_id", target.as_str()),
            ("action", action.as_str()),
            ("actor", actor.as_str()),
            ("cursor", cursor.as_str()),
        ])
        .unwrap_or_default();
        format!("/console/audit?{q}")
    });
    let body = html! {
        form.filters method="get" action="/console/audit" role="search" {
            div.field { label for="target_id" { "Target id" } input #target_id name="target_id" value=(target); }
            div.field { label for="action" { "Action" } input #action name="action" placeholder="key.revoke" value=(action); }
            div.field { label for="actor" { "Actor" } input #actor name="actor" placeholder="adm_..." value=(actor); }
            button type="submit" { "Filter" }
        }
        @if items.is_empty() { p { "No entries match." } }
        @else {
            div.table-wrap { table #audit {
                caption { @if first_page { "Newest first" } @else { "Older entries, newest first" } }
                thead { tr { th scope="col" { "At" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Details" } } }
                tbody {
                    @for e in &items {
                        tr {
                            td { (layout::ts(e.at)) }
                            td { code { (e.actor) } }
                            td.action { (e.action) }
                            td { a href=(format!("/console/audit?target_id={}", e.target_id)) { code { (e.target_id) } } }
                            td { code.details { (e.details.to_string()) } }
                        }
                    }
                }
            } }
        }
        @if let Some(href) = &older { p.pager { a #older href=(href) { "Older entries" } } }
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page("Audit log", Some(&s), body),
    ))
}

/// GET /console/snapshot
pub async fn snapshot(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let st = state.clone();
    let p = db(&state, move |c, now| {
        st.snapshots.current(c, now, &st.metrics)
    })
    .await?;
    let body = html! {
        dl.facts #snapshot {
            dt { "Version" } dd #snapshot-version { (p.version) }
            dt { "Published at" } dd { (layout::ts(p.issued_at_ms)) }
            dt { "Valid until" } dd { (layout::ts(p.valid_until_ms)) }
            dt { "Signing key id" } dd { code #signing-key { (p.key_id) } }
            dt { "Keys" } dd { (p.key_count) }
            dt { "ETag" } dd { code { (p.etag) } }
        }
        (edge_keys(&state))
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page("Snapshot", Some(&s), body),
    ))
}

/// The edge secret that lists the keys snapshots are verified with (edge/src/config.rs).
pub const EDGE_KEYS_SECRET: &str = "SNAPSHOT_PUBLIC_KEYS";

/// The value of [`EDGE_KEYS_SECRET`] for this control plane: the active key and the retiring
/// ones still in force, comma-separated, so that edges accept snapshots signed by either
/// during a signing-key rotation.
fn edge_keys(state: &AppState) -> maud::Markup {
    let now = state.clock.now_ms();
    let keys = state.snapshots.keyring(now).public_keys(now);
    let value = keys
        .iter()
        .map(|k| k.public_key.as_str())
        .collect::<Vec<_>>()
        .join(",");
    // The wrangler the README deploys with (the last one that runs on Node 20).
    let command = format!("npx wrangler@4.86.0 secret put {EDGE_KEYS_SECRET}");
    html! {
        section.card aria-labelledby="edge-keys-h" {
            h2 #edge-keys-h { "Public key for the edges" }
            p {
                "Edges verify each snapshot's Ed25519 signature with the keys in their "
                code { (EDGE_KEYS_SECRET) } " secret. In the edge's folder, run the command below and paste the value when it asks for it."
            }
            div.secret {
                label for="wrangler-command" { "Command" }
                input #wrangler-command type="text" readonly value=(command);
                button type="button" #copy-command data-copy="wrangler-command" { "Copy" }
            }
            div.secret {
                label for="public-keys" { "Value of " code { (EDGE_KEYS_SECRET) } }
                input #public-keys type="text" readonly value=(value) aria-describedby="public-keys-hint";
                button type="button" #copy-public-keys data-copy="public-keys" { "Copy" }
                small #public-keys-hint {
                    @if keys.len() > 1 {
                        "The active key and the retiring ones, comma-separated: edges accept snapshots signed by any of them until the rotation is over."
                    } @else {
                        "The active signing key, base64url."
                    }
                }
            }
            div.table-wrap { table #public-key-list {
                caption { "Signing keys in force" }
                thead { tr { th scope="col" { "Key id" } th scope="col" { "Status" } th scope="col" { "Public key" } } }
                tbody {
                    @for k in &keys {
                        tr {
                            td { code { (k.key_id) } }
                            td {
                                @if k.active { "active" }
                                @else { "retiring until " (k.retire_after_ms.map(layout::ts).unwrap_or_default()) }
                            }
                            td { code { (k.public_key) } }
                        }
                    }
                }
            } }
        }
    }
}

fn admin_field(f: &str) -> String {
    match f.split(['.', '[']).next().unwrap_or(f) {
        "email" => "email".to_owned(),
        "password" => "password".to_owned(),
        "role" => "role".to_owned(),
        "name" => "token_name".to_owned(),
        _ => "form".to_owned(),
    }
}

async fn admins_page(
    s: &Session,
    state: &web::Data<AppState>,
    errors: &FieldErrors,
    created_token: Option<(String, String)>,
) -> Result<String, ConsoleError> {
    let admins = db(state, |c, _| domain::list_admins(c)).await?.items;
    let tokens = db(state, |c, _| domain::list_tokens(c)).await?.items;
    let roles = [("viewer", "viewer"), ("admin", "admin"), ("owner", "owner")];
    Ok(layout::page(
        "Admins and tokens",
        Some(s),
        html! {
            @if let Some((name, token)) = &created_token {
                div.warning role="alert" { strong { "Copy the token " (name) " now. " } "It is shown only once." }
                div.secret {
                    label for="plaintext" { "The new token" }
                    input #plaintext type="text" readonly value=(token);
                    button type="button" #copy data-copy="plaintext" { "Copy" }
                }
            }
            @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
            section aria-labelledby="admins-h" {
                h2 #admins-h { "Admins" }
                div.table-wrap { table #admins {
                    thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { span.sr-only { "Actions" } } } }
                    tbody { @for a in &admins { tr id=(format!("admin-{}", a.id)) {
                        td { (a.email) }
                        td {
                            form.inline method="post" action=(format!("/console/admins/{}/role", a.id)) {
                                (layout::csrf(s))
                                label.sr-only for=(format!("role-{}", a.id)) { "Role of " (a.email) }
                                select id=(format!("role-{}", a.id)) name="role" {
                                    @for (value, label) in [("viewer", "viewer"), ("admin", "admin"), ("owner", "owner"), ("edge", "edge")] {
                                        option value=(value) selected[a.role.as_str() == value] { (label) }
                                    }
                                }
                                button type="submit" aria-label=(format!("Change the role of {}", a.email)) { "Change role" }
                            }
                        }
                        td { (layout::ts(a.created_at)) }
                        td { form method="post" action=(format!("/console/admins/{}/delete", a.id)) {
                            (layout::csrf(s))
                            button.danger type="submit" aria-label=(format!("Delete admin {}", a.email)) { "Delete" }
                        } }
                    } } }
                } }
                form.card method="post" action="/console/admins" #admin-form {
                    (layout::csrf(s))
                    (layout::text_input("email", "Email", "", None, errors, true))
                    (layout::field("password", "Password", None, errors, html! { input type="password" #password name="password" autocomplete="new-password" required; }))
                    (layout::select("role", "Role", &roles, "viewer", errors))
                    button type="submit" { "Add admin" }
                }
            }
            section aria-labelledby="tokens-h" {
                h2 #tokens-h { "Admin API tokens" }
                div.table-wrap { table #tokens {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { span.sr-only { "Actions" } } } }
                    tbody { @for t in &tokens { tr {
                        td { (t.name) } td { (t.role.as_str()) } td { (layout::ts(t.created_at)) }
                        td { (t.last_used_at.map(layout::ts).unwrap_or_else(|| "never".to_owned())) }
                        td { form method="post" action=(format!("/console/tokens/{}/delete", t.id)) {
                            (layout::csrf(s))
                            button.danger type="submit" aria-label=(format!("Delete token {}", t.name)) { "Delete" }
                        } }
                    } } }
                } }
                form.card method="post" action="/console/tokens" #token-form {
                    (layout::csrf(s))
                    (layout::text_input("token_name", "Name", "", None, errors, true))
                    (layout::select("token_role", "Role", &[("viewer", "viewer"), ("admin", "admin"), ("owner", "owner"), ("edge", "edge")], "viewer", errors))
                    button type="submit" { "Create token" }
                }
            }
        },
    ))
}

/// GET /console/admins (owners only)
pub async fn admins(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    s.require_owner()?;
    Ok(html_response(
        StatusCode::OK,
        admins_page(&s, &state, &FieldErrors::default(), None).await?,
    ))
}

/// POST /console/admins
pub async fn create_admin(
    state: web::Data<AppState>,
    Posted { session, form, .. }: Posted<Owners>,
) -> Result<HttpResponse, ConsoleError> {
    let body = json!({"email": field(&form, "email"), "role": field(&form, "role"), "password": form.get("password").cloned().unwrap_or_default()});
    let actor = session.admin_id.clone();
    let result = match crate::extract::parse_json::<CreateAdmin>(body.to_string().as_bytes()) {
        Ok(input) => {
            crate::routes::accounts::create_admin_off_connection(&state, actor, input).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(redirect("/console/admins")),
        Err(e) => {
            let errors = field_error(e, admin_field)?;
            Ok(html_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                admins_page(&session, &state, &errors, None).await?,
            ))
        }
    }
}

/// POST /console/tokens
pub async fn create_token(
    state: web::Data<AppState>,
    Posted { session, form, .. }: Posted<Owners>,
) -> Result<HttpResponse, ConsoleError> {
    let body = json!({"name": field(&form, "token_name"), "role": field(&form, "token_role")});
    let actor = session.admin_id.clone();
    let result = submit(&state, &body, move |c, now, input: CreateToken| {
        domain::create_token(c, now, &actor, input)
    })
    .await;
    match result {
        Ok(t) => Ok(html_response(
            StatusCode::CREATED,
            admins_page(
                &session,
                &state,
                &FieldErrors::default(),
                Some((t.name, t.token)),
            )
            .await?,
        )),
        Err(e) => {
            let errors = field_error(e, admin_field)?;
            Ok(html_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                admins_page(&session, &state, &errors, None).await?,
            ))
        }
    }
}

/// POST /console/tokens/{id}/delete
pub async fn delete_token(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, .. }: Posted<Owners>,
) -> Result<HttpResponse, ConsoleError> {
    let actor = session.admin_id.clone();
    let id = path.into_inner();
    db(&state, move |c, now| {
        domain::delete_token(c, now, &actor, &TokenId::new(id))
    })
    .await?;
    state.token_cache.clear();
    Ok(redirect("/console/admins"))
}

async fn admins_error(
    s: &Session,
    state: &web::Data<AppState>,
    e: crate::error::ApiError,
) -> Result<HttpResponse, ConsoleError> {
    let status = e.status();
    let errors = field_error(e, admin_field)?;
    Ok(html_response(
        status,
        admins_page(s, state, &errors, None).await?,
    ))
}

/// POST /console/admins/{id}/role (owners only)
pub async fn set_role(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, form, .. }: Posted<Owners>,
) -> Result<HttpResponse, ConsoleError> {
    let actor = session.admin_id.clone();
    let id = path.into_inner();
    let body = json!({"role": field(&form, "role")});
    let result = submit(&state, &body, move |c, now, input: domain::UpdateAdmin| {
        domain::update_admin(c, now, &actor, &AdminId::new(id), input)
    })
    .await;
    match result {
        Ok(_) => Ok(redirect("/console/admins")),
        Err(e) => admins_error(&session, &state, e).await,
    }
}

/// POST /console/admins/{id}/delete (owners only)
pub async fn delete_admin(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Posted { session, .. }: Posted<Owners>,
) -> Result<HttpResponse, ConsoleError> {
    let actor = session.admin_id.clone();
    let id = path.into_inner();
    let result = db(&state, move |c, now| {
        domain::delete_admin(c, now, &actor, &AdminId::new(id))
    })
    .await;
    match result {
        Ok(()) => Ok(redirect("/console/admins")),
        Err(e) => admins_error(&session, &state, e).await,
    }
}

fn account_page(s: &Session, errors: &FieldErrors, changed: bool) -> String {
    layout::page(
        "Your account",
        Some(s),
        html! {
            @if changed { p.notice role="status" #password-changed { "Your password was changed. Every other session of yours has ended." } }
            @if let Some(e) = errors.get("form") { p.error role="alert" { (e) } }
            dl.facts { dt { "Email" } dd { (s.email) } dt { "Role" } dd { (s.role.as_str()) } }
            form.card method="post" action="/console/account/password" #password-form {
                (layout::csrf(s))
                (layout::field("current_password", "Current password", None, errors, html! { input type="password" #current_password name="current_password" autocomplete="current-password" required; }))
                (layout::field("new_password", "New password", Some("At least 12 characters."), errors, html! { input type="password" #new_password name="new_password" autocomplete="new-password" required; }))
                button type="submit" { "Change password" }
            }
        },
    )
}

/// GET /console/account: one's own account (every role).
pub async fn account(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let s = session::current(&req, &state).await?;
    let changed = req.query_string() == "changed=1";
    Ok(html_response(
        StatusCode::OK,
        account_page(&s, &FieldErrors::default(), changed),
    ))
}

/// POST /console/account/password: changes one's own password; the session continues with a
/// new cookie, every other session ends.
pub async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    Posted { session, form, .. }: Posted<AnyRole>,
) -> Result<HttpResponse, ConsoleError> {
    use actix_web::http::header;
    let token = session::cookie_value(&req, session::COOKIE).unwrap_or_default();
    let input = domain::ChangePassword {
        current_password: form.get("current_password").cloned().unwrap_or_default(),
        new_password: form.get("new_password").cloned().unwrap_or_default(),
    };
    let client = crate::throttle::client_address(&req, &state.trusted_proxies);
    match crate::auth::change_password(&state, &token, input, client).await {
        Ok(new) => {
            let cookie =
                session::session_cookie(&req, Some(&new.token), state.session_ttl_ms / 1000);
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/console/account?changed=1"))
                .insert_header((
                    header::SET_COOKIE,
                    header::HeaderValue::from_str(&cookie)
                        .map_err(crate::error::ApiError::internal)?,
                ))
                .finish())
        }
        Err(e) => {
            let status = e.status();
            let mut errors = FieldErrors::default();
            match e {
                crate::error::ApiError::Validation { field, message } => {
                    errors.push(&field, format!("{field}: {message}"));
                }
                crate::error::ApiError::Unprocessable {
                    field, ref detail, ..
                } => {
                    errors.push(field, format!("{field}: {detail}"));
                }
                crate::error::ApiError::LoginThrottled { .. } => errors.push("form", e.to_string()),
                other => return Err(other.into()),
            }
            Ok(html_response(
                status,
                account_page(&session, &errors, false),
            ))
        }
    }
}
