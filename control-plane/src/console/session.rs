//! Console sessions, CSRF tokens and the console's errors.
//!
//! A session is the same HS256 JWT that `POST /v1/auth/login` issues, kept in the
//! `keygate_session` cookie (HttpOnly, SameSite=Strict, Path=/console, Secure over https).
//! Every POST form carries a CSRF token: HMAC-SHA256 keyed with the session token, which only
//! the browser holding the cookie (and the server) can compute; a mismatch is a 403.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth::{Allowed, AnyRole, Owners, Role, Writers};
use crate::error::ApiError;
use crate::ids::AdminId;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "keygate_session";
/// The hidden form field with the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";

/// A logged-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    /// `adm_...`.
    pub admin_id: String,
    /// Email, for the header.
    pub email: String,
    /// Role.
    pub role: Role,
    /// This session's CSRF token.
    pub csrf: String,
}

impl Session {
    /// Whether the admin may change projects and keys.
    pub fn can_write(&self) -> bool {
        crate::auth::Writers::ROLES.contains(&self.role)
    }

    /// Whether the admin may manage admins and tokens.
    pub fn is_owner(&self) -> bool {
        crate::auth::Owners::ROLES.contains(&self.role)
    }

    /// Refuses unless the role is in `R`.
    pub fn require<R: ConsoleRoles>(&self) -> Result<(), ConsoleError> {
        if R::ROLES.contains(&self.role) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(R::REFUSAL))
        }
    }

    /// Refuses unless the role may write.
    pub fn require_writer(&self) -> Result<(), ConsoleError> {
        self.require::<Writers>()
    }

    /// Refuses unless the role is owner.
    pub fn require_owner(&self) -> Result<(), ConsoleError> {
        self.require::<Owners>()
    }

    /// Checks a submitted form's CSRF token in constant time.
    pub fn check_csrf(&self, submitted: Option<&str>) -> Result<(), ConsoleError> {
        match submitted {
            Some(s) if bool::from(s.as_bytes().ct_eq(self.csrf.as_bytes())) => Ok(()),
            _ => Err(ConsoleError::Forbidden(
                "the form's CSRF token is missing or wrong; reload the page and try again",
            )),
        }
    }
}

/// A set of roles a console form accepts (see [`super::Posted`]), with the console's refusal
/// for a session whose role is not in it.
pub trait ConsoleRoles: Allowed {
    /// The 403 page's message.
    const REFUSAL: &'static str;
}

impl ConsoleRoles for Writers {
    const REFUSAL: &'static str = "your role may read but not change anything";
}

impl ConsoleRoles for Owners {
    const REFUSAL: &'static str = "only owners may manage admins and tokens";
}

/// Every logged-in admin: one's own session (logging out, changing one's password, trying a key).
impl ConsoleRoles for AnyRole {
    // Never shown: every role is in the set.
    const REFUSAL: &'static str = "";
}

/// The CSRF token of a session token.
pub fn csrf_token(session_token: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(session_token.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(b"keygate console csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

/// The value of cookie `name` in the request.
pub fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether the request reached us over https (directly or per `X-Forwarded-Proto`).
pub fn is_https(req: &HttpRequest) -> bool {
    let forwarded = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    forwarded || req.connection_info().scheme() == "https"
}

/// `Set-Cookie` for a session token (`None` clears the cookie).
pub fn session_cookie(req: &HttpRequest, token: Option<&str>, max_age_s: i64) -> String {
    let secure = if is_https(req) { "; Secure" } else { "" };
    match token {
        Some(t) => format!(
            "{COOKIE}={t}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
        ),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// The request's session, or `ConsoleError::LoginRequired`.
pub async fn current(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<Session, ConsoleError> {
    let token = cookie_value(req, COOKIE)
        .filter(|t| !t.is_empty())
        .ok_or(ConsoleError::LoginRequired)?;
    let now = state.clock.now_ms();
    let claims = state
        .jwt
        .decode(&token, now)
        .ok_or(ConsoleError::LoginRequired)?;
    let id = AdminId::new(claims.sub);
    let hash = crate::auth::hash_token(&token);
    let epoch = claims.sep;
    let admin = crate::routes::db(state, move |c, _| {
        crate::domain::accounts::session_admin(c, &hash, &id, epoch)
    })
    .await?;
    match admin {
        Ok(admin) if admin.role != Role::Edge => Ok(Session {
            admin_id: admin.id.into_string(),
            email: admin.email,
            role: admin.role,
            csrf: csrf_token(&token),
        }),
        _ => Err(ConsoleError::LoginRequired),
    }
}

/// What a console handler can fail with: rendered as an HTML page, never problem+json.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No or expired session: redirect to the login page.
    #[error("log in first")]
    LoginRequired,
    /// The role may not do this, or the CSRF token is wrong.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such page or resource.
    #[error("{0}")]
    NotFound(String),
    /// An API error not handled by the page (shown with its detail, except internals).
    #[error(transparent)]
    Api(#[from] ApiError),
}
