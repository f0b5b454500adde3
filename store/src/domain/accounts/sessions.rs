//! Logins and sessions: finding the admin to log in, checking a password in constant work,
//! issuing a session token, and ending one.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use diesel::prelude::*;

use super::{dummy_hash, Session};
use crate::credentials::{JwtKeys, Role};
use crate::db::schema::{admins, revoked_sessions};
use crate::db::DbConn;
use crate::error::StoreError;
use crate::ids::AdminId;

/// The id and password hash of the admin with this email (normalised), if any. Login reads
/// these, gives the connection back, and only then verifies the password: Argon2id takes tens
/// of milliseconds of CPU, which must not hold a pooled connection.
pub fn find_login(
    conn: &mut DbConn,
    email: &str,
) -> Result<Option<(AdminId, String, i64)>, StoreError> {
    let email = email.trim().to_lowercase();
    Ok(admins::table
        .filter(admins::email.eq(&email))
        .select((admins::id, admins::password_hash, admins::session_epoch))
        .first(conn)
        .optional()?)
}

/// Whether `password` matches the Argon2id PHC string `stored`. With no stored hash (unknown
/// email) a dummy hash is verified instead, so both cases take as long, and the answer is
/// `false`. The comparison inside `argon2` is constant-time.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    let known = stored.is_some();
    let hash = match stored {
        Some(s) => s,
        None => dummy_hash(),
    };
    let ok = PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    known && ok
}

/// Issues a session token for an admin whose password was verified.
pub fn issue_session(
    jwt: &JwtKeys,
    admin_id: &AdminId,
    epoch: i64,
    now: i64,
    ttl_ms: i64,
) -> Result<Session, StoreError> {
    let expires_at = now + ttl_ms;
    let token = jwt.issue(admin_id, epoch, now, expires_at)?;
    tracing::info!(admin_id = %admin_id, "admin logged in");
    Ok(Session { token, expires_at })
}

/// Ends a session token before it expires: from now on every replica refuses it. `token_hash`
/// is [`hash_token`] of the JWT and `expires_at` its expiry (ms). Rows of tokens that have
/// expired meanwhile are removed on the way, so the table holds only live sessions' ends.
pub fn end_session(
    conn: &mut DbConn,
    now: i64,
    token_hash: &str,
    admin_id: &AdminId,
    expires_at: i64,
) -> Result<(), StoreError> {
    let prune =
        diesel::delete(revoked_sessions::table.filter(revoked_sessions::expires_at.le(now)));
    crate::with_backend!(conn, |c| prune.execute(c))?;
    // Logging out twice is not an error.
    let insert = diesel::insert_into(revoked_sessions::table)
        .values((
            revoked_sessions::token_hash.eq(token_hash),
            revoked_sessions::admin_id.eq(admin_id),
            revoked_sessions::expires_at.eq(expires_at),
        ))
        .on_conflict_do_nothing();
    crate::with_backend!(conn, |c| insert.execute(c))?;
    tracing::info!(admin_id = %admin_id, "admin logged out");
    Ok(())
}

/// Whether the session token with this hash was ended by logging out.
pub fn session_ended(conn: &mut DbConn, token_hash: &str) -> Result<bool, StoreError> {
    let found: Option<String> = revoked_sessions::table
        .find(token_hash)
        .select(revoked_sessions::token_hash)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}

/// The admin a session stands for, as read when a request presents the session.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = admins)]
pub struct SessionAdmin {
    /// `adm_...`.
    pub id: AdminId,
    /// Email.
    pub email: String,
    /// Role now (not when the session was issued: a role change ends sessions anyway).
    pub role: Role,
    /// The admin's session epoch now.
    pub session_epoch: i64,
}

/// Why a session with a valid signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefused {
    /// Logged out (the token is on the revoked list).
    LoggedOut,
    /// Issued before the admin's role or password changed.
    Ended,
    /// The admin was deleted.
    AdminGone,
}

impl SessionRefused {
    /// Why, in a sentence.
    pub fn reason(self) -> &'static str {
        match self {
            SessionRefused::LoggedOut => "the session was logged out",
            SessionRefused::Ended => "the session was ended (role or password changed)",
            SessionRefused::AdminGone => "the session's admin no longer exists",
        }
    }
}

/// The one session lookup, for the API and the console: the admin `admin_id` of a session
/// token (by its hash) issued under `epoch`, unless the session was logged out, ended by a
/// role or password change, or its admin deleted. The token's signature and expiry are the
/// caller's to check first ([`JwtKeys::decode`]).
pub fn session_admin(
    conn: &mut DbConn,
    token_hash: &str,
    admin_id: &AdminId,
    epoch: i64,
) -> Result<Result<SessionAdmin, SessionRefused>, StoreError> {
    if session_ended(conn, token_hash)? {
        return Ok(Err(SessionRefused::LoggedOut));
    }
    let admin: Option<SessionAdmin> = admins::table
        .find(admin_id)
        .select(SessionAdmin::as_select())
        .first(conn)
        .optional()?;
    Ok(match admin {
        None => Err(SessionRefused::AdminGone),
        Some(a) if a.session_epoch != epoch => Err(SessionRefused::Ended),
        Some(a) => Ok(a),
    })
}
