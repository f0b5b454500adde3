//! Authentication and roles.
//!
//! A bearer token is either an admin API token (`kgt_` + 40 base62 characters, or the
//! operator's `KEYGATE_BOOTSTRAP_TOKEN`; stored as its SHA-256) or a session JWT from
//! `POST /v1/auth/login` (it has two dots, API tokens have none, so the two are told apart
//! without a lookup). A middleware resolves the token once per request; handlers state the
//! roles they accept in their signature (`Authed<Writers>`), and the extractor refuses with 401
//! or 403 before any body is read.

use std::marker::PhantomData;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use diesel::prelude::*;
use futures_util::future::{ready, Ready};

use crate::db::schema::admin_tokens;
use crate::db::DbConn;
use crate::error::ApiError;
use crate::ids::AdminId;
use crate::state::AppState;

/// `last_used_at` is written at most this often per token, so reads stay reads.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

pub use crate::credentials::{
    generate_token, hash_token, Claims, JwtKeys, Principal, Role, TokenCache, TOKEN_CACHE_TTL,
    TOKEN_PREFIX,
};

/// A set of roles a route accepts.
pub trait Allowed {
    /// The roles.
    const ROLES: &'static [Role];
}

macro_rules! role_set {
    ($(#[$doc:meta])* $name:ident = [$($role:ident),+]) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl Allowed for $name {
            const ROLES: &'static [Role] = &[$(Role::$role),+];
        }
    };
}

role_set!(
    /// Owners only: admins and tokens.
    Owners = [Owner]
);
role_set!(
    /// Owners and admins: changes to projects and keys.
    Writers = [Owner, Admin]
);
role_set!(
    /// Everyone but the edge: reads.
    Readers = [Owner, Admin, Viewer]
);
role_set!(
    /// Everyone: the snapshot and its public keys.
    SnapshotReaders = [Owner, Admin, Viewer, Edge]
);
role_set!(
    /// Every role: one's own session (logging out, changing one's password).
    AnyRole = [Owner, Admin, Viewer, Edge]
);
role_set!(
    /// The edge (and owners): usage reports.
    UsageWriters = [Owner, Edge]
);

/// The outcome of resolving a bearer token, left in the request's extensions.
#[derive(Debug, Clone)]
enum AuthOutcome {
    Ok(Principal),
    Invalid(&'static str),
}

/// A request whose principal has one of `R`'s roles.
#[derive(Debug)]
pub struct Authed<R: Allowed> {
    /// The principal.
    pub principal: Principal,
    _roles: PhantomData<R>,
}

impl<R: Allowed> FromRequest for Authed<R> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let outcome = req.extensions().get::<AuthOutcome>().cloned();
        ready(match outcome {
            None => Err(ApiError::Unauthorized(
                "an Authorization: Bearer token is required",
            )),
            Some(AuthOutcome::Invalid(why)) => Err(ApiError::Unauthorized(why)),
            Some(AuthOutcome::Ok(p)) if R::ROLES.contains(&p.role) => Ok(Authed {
                principal: p,
                _roles: PhantomData,
            }),
            Some(AuthOutcome::Ok(_)) => Err(ApiError::Forbidden),
        })
    }
}

/// The principal of a request, if it was authenticated (for logs).
pub fn actor_of(req: &HttpRequest) -> Option<String> {
    match req.extensions().get::<AuthOutcome>() {
        Some(AuthOutcome::Ok(p)) => Some(p.actor.clone()),
        _ => None,
    }
}

/// Middleware: resolves the bearer token, if any, before the handler's extractors run.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_owned));
    if let Some(header) = header {
        let outcome = match (header, req.app_data::<web::Data<AppState>>()) {
            (Ok(h), Some(state)) => resolve(state.clone(), h).await,
            (Err(_), _) => AuthOutcome::Invalid("the Authorization header is not valid text"),
            (_, None) => AuthOutcome::Invalid("authentication is not configured"),
        };
        req.extensions_mut().insert(outcome);
    }
    next.call(req).await
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: &str) -> Option<&str> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Runs Argon2id work (`f`) on the blocking pool once one of the `password_hashing` permits
/// is free, so that a burst of logins queues instead of taking every core and thread.
pub async fn password_work<T, E, F>(state: &web::Data<AppState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let _permit = state
        .password_hashing
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    crate::error::blocking(f).await
}

/// Logs in (`POST /v1/auth/login` and the console): throttling first, then the admin's row
/// read on a pooled connection that is given back before the password is verified.
pub async fn login(
    state: &web::Data<AppState>,
    input: crate::domain::accounts::Login,
    client: Option<std::net::IpAddr>,
) -> Result<crate::domain::accounts::Session, ApiError> {
    let now = state.clock.now_ms();
    let email = input.email.trim().to_lowercase();
    if let Err(wait_ms) = state.login_throttle.begin(&email, client, now) {
        let retry_after_s = u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1);
        tracing::warn!(retry_after_s, "login throttled");
        return Err(ApiError::LoginThrottled { retry_after_s });
    }
    let lookup = email.clone();
    let row = crate::state::db(state, move |c, _| {
        crate::domain::accounts::find_login(c, &lookup)
    })
    .await?;
    let (id, stored) = match row {
        Some((id, hash, epoch)) => (Some((id, epoch)), Some(hash)),
        None => (None, None),
    };
    let password = input.password;
    let ok = password_work(state, move || {
        Ok::<_, ApiError>(crate::domain::accounts::verify_password(
            stored.as_deref(),
            &password,
        ))
    })
    .await?;
    match id {
        Some((id, epoch)) if ok => {
            state.login_throttle.succeeded(&email, client);
            Ok(crate::domain::accounts::issue_session(
                &state.jwt,
                &id,
                epoch,
                now,
                state.session_ttl_ms,
            )?)
        }
        _ => Err(ApiError::InvalidCredentials),
    }
}

/// Changes the password of the admin whose session `token` is: the current password is checked
/// (throttled like a login, so a stolen session cannot guess it), the new one hashed off the
/// connection, and the admin's session epoch moved on, which ends every session of theirs,
/// this one included. Returns a new session to continue with.
pub async fn change_password(
    state: &web::Data<AppState>,
    token: &str,
    input: crate::domain::accounts::ChangePassword,
    client: Option<std::net::IpAddr>,
) -> Result<crate::domain::accounts::Session, ApiError> {
    use crate::domain::accounts as domain;
    let now = state.clock.now_ms();
    let Some(claims) = state.jwt.decode(token, now) else {
        return Err(not_a_session());
    };
    domain::check_password(&input.new_password)
        .map_err(|_| domain::password_error("new_password"))?;
    let id = AdminId::new(claims.sub.clone());
    let row = crate::state::db(state, move |c, _| domain::find_admin_row(c, &id)).await?;
    if let Err(wait_ms) = state.login_throttle.begin(&row.email, client, now) {
        let retry_after_s = u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1);
        return Err(ApiError::LoginThrottled { retry_after_s });
    }
    let (stored, current, new) = (
        row.password_hash.clone(),
        input.current_password,
        input.new_password,
    );
    let new_hash = password_work(state, move || {
        if !domain::verify_password(Some(&stored), &current) {
            return Ok(None);
        }
        domain::hash_password(&new).map(Some)
    })
    .await?;
    let Some(new_hash) = new_hash else {
        return Err(ApiError::Unprocessable {
            code: "wrong_current_password",
            field: "current_password",
            detail: "is not this admin's password".into(),
        });
    };
    state.login_throttle.succeeded(&row.email, client);
    let id = row.id.clone();
    let epoch = crate::state::db(state, move |c, now| {
        domain::set_password(c, now, &id, &new_hash)
    })
    .await?;
    Ok(domain::issue_session(
        &state.jwt,
        &row.id,
        epoch,
        now,
        state.session_ttl_ms,
    )?)
}

/// The answer to a session-only request made with an API token.
pub fn not_a_session() -> ApiError {
    ApiError::BadRequest {
        code: "not_a_session",
        detail: "only a session token (from POST /v1/auth/login) can do this; API tokens are managed with /v1/admin-tokens".into(),
    }
}

/// Ends the session `token` belongs to (see [`crate::domain::accounts::end_session`]);
/// `Ok(false)` when it is not a live session token.
pub async fn end_session_token(state: &web::Data<AppState>, token: &str) -> Result<bool, ApiError> {
    let Some(claims) = state.jwt.decode(token, state.clock.now_ms()) else {
        return Ok(false);
    };
    let hash = hash_token(token);
    crate::state::db(state, move |c, now| {
        crate::domain::accounts::end_session(
            c,
            now,
            &hash,
            &AdminId::new(claims.sub),
            claims.exp.saturating_mul(1000),
        )
    })
    .await?;
    Ok(true)
}

async fn resolve(state: web::Data<AppState>, header: String) -> AuthOutcome {
    let Some(token) = bearer_token(&header) else {
        return AuthOutcome::Invalid("the Authorization header must be `Bearer <token>`");
    };
    let now = state.clock.now_ms();
    // A JWT has exactly two dots; API tokens (generated or bootstrap) have none.
    if !token.contains('.') {
        let hash = hash_token(token);
        if let Some(p) = state.token_cache.get(&hash) {
            return AuthOutcome::Ok(p);
        }
        let st = state.clone();
        let found = web::block(move || -> Result<Option<Principal>, ApiError> {
            let mut conn = st.pool.get()?;
            let found = lookup_api_token(&mut conn, &hash, now)?;
            if let Some(p) = &found {
                st.token_cache.put(hash, p.clone());
            }
            Ok(found)
        })
        .await;
        match found {
            Ok(Ok(Some(p))) => AuthOutcome::Ok(p),
            Ok(Ok(None)) => AuthOutcome::Invalid("the token is unknown or was deleted"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "token lookup failed");
                AuthOutcome::Invalid("the token could not be checked")
            }
            Err(_) => AuthOutcome::Invalid("the token could not be checked"),
        }
    } else if token.matches('.').count() == 2 {
        let Some(claims) = state.jwt.decode(token, now) else {
            return AuthOutcome::Invalid("the session token is invalid or expired");
        };
        let st = state.clone();
        let hash = hash_token(token);
        let found = web::block(move || -> Result<_, ApiError> {
            let mut conn = st.pool.get()?;
            Ok(crate::domain::accounts::session_admin(
                &mut conn,
                &hash,
                &AdminId::new(claims.sub),
                claims.sep,
            )?)
        })
        .await;
        match found {
            Ok(Ok(Ok(admin))) => AuthOutcome::Ok(Principal {
                actor: admin.id.into_string(),
                role: admin.role,
            }),
            Ok(Ok(Err(refused))) => AuthOutcome::Invalid(refused.reason()),
            _ => AuthOutcome::Invalid("the token could not be checked"),
        }
    } else {
        AuthOutcome::Invalid("the token is not a Keygate token")
    }
}

fn lookup_api_token(
    conn: &mut DbConn,
    hash: &str,
    now: i64,
) -> Result<Option<Principal>, ApiError> {
    // On the concrete connection, so the prepared statement is cached (see verify::lookup).
    let query = admin_tokens::table
        .filter(admin_tokens::token_hash.eq(hash))
        .select((
            admin_tokens::id,
            admin_tokens::role,
            admin_tokens::last_used_at,
        ));
    // `load`, not `first`: see verify::lookup.
    let rows: Vec<(String, Role, Option<i64>)> = crate::with_backend!(conn, |c| query.load(c))?;
    let row = rows.into_iter().next();
    let Some((id, role, last_used)) = row else {
        return Ok(None);
    };
    if last_used.is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MS) {
        diesel::update(admin_tokens::table.find(&id))
            .set(admin_tokens::last_used_at.eq(now))
            .execute(conn)?;
    }
    Ok(Some(Principal { actor: id, role }))
}
