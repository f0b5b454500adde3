//! Admin accounts (argon2 password hashes), session login, and admin API tokens (stored as
//! SHA-256; shown once).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::{audit, check_name, is_unique_violation};
use crate::credentials::{generate_token, hash_token, JwtKeys, Role};
use crate::db::models::{AdminRow, TokenRow};
use crate::db::schema::{admin_tokens, admins, revoked_sessions};
use crate::db::{write_tx, DbConn};
use crate::error::{ConflictCode, StoreError};
use crate::ids::new_id;

/// Shortest accepted password.
pub const MIN_PASSWORD_CHARS: usize = 12;
const MAX_PASSWORD_CHARS: usize = 1024;

/// Body of `POST /v1/auth/login`.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A session token. `Debug` leaves the token out.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &crate::REDACTED)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Body of `POST /v1/admins`.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAdmin {
    /// Email, unique: `local@domain`, at most 254 bytes, no spaces.
    #[cfg_attr(feature = "openapi", schema(min_length = 3))]
    pub email: String,
    /// Role.
    pub role: Role,
    /// 12 to 1024 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 12, max_length = 1024))]
    pub password: String,
}

impl std::fmt::Debug for CreateAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateAdmin")
            .field("email", &self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// An admin account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminView {
    /// `adm_...`.
    pub id: String,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
}

/// A list of admins.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminList {
    /// Oldest first.
    pub items: Vec<AdminView>,
}

/// Body of `POST /v1/admin-tokens`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for: not blank, at most 200 characters once trimmed, no control
    /// characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub name: String,
    /// Role.
    pub role: Role,
}

/// An admin API token without its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    /// `tok_...`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
    /// RFC 3339, to the minute.
    #[serde(with = "crate::timefmt::opt_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_used_at: Option<i64>,
}

/// A new token: shown once. `Debug` leaves the token out.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// `tok_...`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// RFC 3339.
    #[serde(with = "crate::timefmt::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
    /// The token. Store it now: it is never shown again.
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("token", &crate::REDACTED)
            .finish()
    }
}

/// A list of tokens.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    /// Oldest first.
    pub items: Vec<TokenView>,
}

fn role_of(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).ok_or_else(|| StoreError::internal(anyhow::anyhow!("stored role {s:?}")))
}

fn admin_view(r: &AdminRow) -> Result<AdminView, StoreError> {
    Ok(AdminView {
        id: r.id.clone(),
        email: r.email.clone(),
        role: role_of(&r.role)?,
        created_at: r.created_at,
    })
}

/// Normalises and checks an email address.
pub fn check_email(email: &str) -> Result<String, StoreError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if !ok {
        return Err(StoreError::validation("email", "is not an email address"));
    }
    Ok(e)
}

/// The validation error of a password field.
pub fn password_error(field: &str) -> StoreError {
    StoreError::validation(
        field,
        format!("must be at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_CHARS} characters"),
    )
}

/// Checks a password's length.
pub fn check_password(password: &str) -> Result<(), StoreError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(StoreError::validation(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(StoreError::validation("password", "is too long"));
    }
    Ok(())
}

/// Argon2id PHC string of a password.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::internal(anyhow::anyhow!("password hashing failed: {e}")))
}

/// A hash to verify against when the email is unknown, so both cases take as long.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("keygate-dummy-password").unwrap_or_default())
}

/// Creates an admin.
pub fn create_admin(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    input: CreateAdmin,
) -> Result<AdminView, StoreError> {
    check_email(&input.email)?;
    check_password(&input.password)?;
    let password_hash = hash_password(&input.password)?;
    create_admin_hashed(conn, now, actor, &input.email, input.role, password_hash)
}

/// Creates an admin whose password was checked and hashed already (off the connection).
pub fn create_admin_hashed(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    email: &str,
    role: Role,
    password_hash: String,
) -> Result<AdminView, StoreError> {
    let email = check_email(email)?;
    let row = AdminRow {
        id: new_id("adm"),
        email,
        role: role.as_str().to_owned(),
        password_hash,
        created_at: now,
        session_epoch: 0,
    };
    write_tx(conn, |conn| {
        let taken: i64 = admins::table
            .filter(admins::email.eq(&row.email))
            .count()
            .get_result(conn)?;
        let duplicate = || StoreError::Conflict {
            code: ConflictCode::DuplicateEmail,
            detail: format!("an admin with email {:?} already exists", row.email),
        };
        if taken > 0 {
            return Err(duplicate());
        }
        diesel::insert_into(admins::table)
            .values(&row)
            .execute(conn)
            .map_err(|e| {
                if is_unique_violation(&e) {
                    duplicate()
                } else {
                    e.into()
                }
            })?;
        let view = admin_view(&row)?;
        audit::record(
            conn,
            now,
            actor,
            "admin.create",
            &view.id,
            serde_json::json!({ "before": null, "after": view }),
        )?;
        Ok(view)
    })
}

/// Body of `POST /v1/auth/password`.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The admin's password now.
    pub current_password: String,
    /// The new password, 12 to 1024 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 12, max_length = 1024))]
    pub new_password: String,
}

impl std::fmt::Debug for ChangePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePassword").finish_non_exhaustive()
    }
}

/// Body of `PATCH /v1/admins/{admin_id}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateAdmin {
    /// The new role.
    pub role: Role,
}

/// The admin row with this id, or 404.
pub fn find_admin_row(conn: &mut DbConn, id: &str) -> Result<AdminRow, StoreError> {
    admins::table
        .find(id)
        .first(conn)
        .optional()?
        .ok_or_else(|| StoreError::not_found("admin", id))
}

/// Locks the owner rows (PostgreSQL; SQLite's `BEGIN IMMEDIATE` has locked the database
/// already) and counts them, so that two owners demoted or deleted at once cannot both pass
/// the last-owner check.
fn owners_locked(conn: &mut DbConn) -> Result<usize, StoreError> {
    let query = admins::table
        .filter(admins::role.eq(Role::Owner.as_str()))
        .select(admins::id);
    let ids: Vec<String> = match conn {
        DbConn::Postgresql(c) => query.for_update().load(c)?,
        DbConn::Sqlite(c) => query.load(c)?,
    };
    Ok(ids.len())
}

fn last_owner(what: &str) -> StoreError {
    StoreError::Conflict {
        code: ConflictCode::LastOwner,
        detail: format!("{what} would leave no owner; make another admin an owner first"),
    }
}

/// Ends every session of an admin at once: sessions carry the epoch they were issued under.
fn bump_epoch(conn: &mut DbConn, id: &str) -> Result<i64, StoreError> {
    diesel::update(admins::table.find(id))
        .set(admins::session_epoch.eq(admins::session_epoch + 1))
        .execute(conn)?;
    Ok(admins::table
        .find(id)
        .select(admins::session_epoch)
        .first(conn)?)
}

/// Changes an admin's role (owners only). Demoting the last owner is 409 `last_owner`. A change
/// ends the admin's sessions, so the new role applies to a fresh login.
pub fn update_admin(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &str,
    input: UpdateAdmin,
) -> Result<AdminView, StoreError> {
    write_tx(conn, |conn| {
        let row = find_admin_row(conn, id)?;
        let before = admin_view(&row)?;
        if before.role == input.role {
            return Ok(before);
        }
        if before.role == Role::Owner && owners_locked(conn)? <= 1 {
            return Err(last_owner("demoting this admin"));
        }
        diesel::update(admins::table.find(id))
            .set(admins::role.eq(input.role.as_str()))
            .execute(conn)?;
        bump_epoch(conn, id)?;
        let after = admin_view(&find_admin_row(conn, id)?)?;
        audit::record(
            conn,
            now,
            actor,
            "admin.update",
            id,
            serde_json::json!({ "before": before, "after": after, "sessions_ended": true }),
        )?;
        tracing::info!(admin_id = %id, role = after.role.as_str(), "admin role changed");
        Ok(after)
    })
}

/// Deletes an admin (owners only); their sessions end at once. Deleting the last owner is
/// 409 `last_owner`.
pub fn delete_admin(conn: &mut DbConn, now: i64, actor: &str, id: &str) -> Result<(), StoreError> {
    write_tx(conn, |conn| {
        let row = find_admin_row(conn, id)?;
        let before = admin_view(&row)?;
        if before.role == Role::Owner && owners_locked(conn)? <= 1 {
            return Err(last_owner("deleting this admin"));
        }
        diesel::delete(revoked_sessions::table.filter(revoked_sessions::admin_id.eq(id)))
            .execute(conn)?;
        diesel::delete(admins::table.find(id)).execute(conn)?;
        audit::record(
            conn,
            now,
            actor,
            "admin.delete",
            id,
            serde_json::json!({ "before": before, "after": null }),
        )?;
        tracing::info!(admin_id = %id, "admin deleted");
        Ok(())
    })
}

/// Stores a new password hash for an admin and ends all their sessions; returns the new
/// session epoch. Audited as `admin.password` (no hash in the details).
pub fn set_password(
    conn: &mut DbConn,
    now: i64,
    id: &str,
    password_hash: &str,
) -> Result<i64, StoreError> {
    write_tx(conn, |conn| {
        find_admin_row(conn, id)?;
        diesel::update(admins::table.find(id))
            .set(admins::password_hash.eq(password_hash))
            .execute(conn)?;
        let epoch = bump_epoch(conn, id)?;
        audit::record(
            conn,
            now,
            id,
            "admin.password",
            id,
            serde_json::json!({ "sessions_ended": true }),
        )?;
        tracing::info!(admin_id = %id, "admin changed their password");
        Ok(epoch)
    })
}

/// Lists admins.
pub fn list_admins(conn: &mut DbConn) -> Result<AdminList, StoreError> {
    let rows: Vec<AdminRow> = admins::table.order(admins::id.asc()).load(conn)?;
    let items = rows.iter().map(admin_view).collect::<Result<_, _>>()?;
    Ok(AdminList { items })
}

/// The id and password hash of the admin with this email (normalised), if any. Login reads
/// these, gives the connection back, and only then verifies the password: Argon2id takes tens
/// of milliseconds of CPU, which must not hold a pooled connection.
pub fn find_login(
    conn: &mut DbConn,
    email: &str,
) -> Result<Option<(String, String, i64)>, StoreError> {
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
    admin_id: &str,
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
    admin_id: &str,
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

fn token_view(r: &TokenRow) -> Result<TokenView, StoreError> {
    Ok(TokenView {
        id: r.id.clone(),
        name: r.name.clone(),
        role: role_of(&r.role)?,
        created_at: r.created_at,
        last_used_at: r.last_used_at,
    })
}

/// Creates an admin API token.
pub fn create_token(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    input: CreateToken,
) -> Result<CreatedToken, StoreError> {
    let name = check_name("name", &input.name)?;
    let token = generate_token();
    let row = TokenRow {
        id: new_id("tok"),
        name,
        role: input.role.as_str().to_owned(),
        token_hash: hash_token(&token),
        created_at: now,
        last_used_at: None,
    };
    write_tx(conn, |conn| {
        diesel::insert_into(admin_tokens::table)
            .values(&row)
            .execute(conn)?;
        let view = token_view(&row)?;
        audit::record(
            conn,
            now,
            actor,
            "token.create",
            &view.id,
            serde_json::json!({ "before": null, "after": view }),
        )?;
        Ok(CreatedToken {
            id: view.id,
            name: view.name,
            role: view.role,
            created_at: view.created_at,
            token,
        })
    })
}

/// Lists tokens.
pub fn list_tokens(conn: &mut DbConn) -> Result<TokenList, StoreError> {
    let rows: Vec<TokenRow> = admin_tokens::table
        .order(admin_tokens::id.asc())
        .load(conn)?;
    let items = rows.iter().map(token_view).collect::<Result<_, _>>()?;
    Ok(TokenList { items })
}

/// Deletes a token; it stops working at once (every request looks its hash up).
pub fn delete_token(conn: &mut DbConn, now: i64, actor: &str, id: &str) -> Result<(), StoreError> {
    write_tx(conn, |conn| {
        let row: TokenRow = admin_tokens::table
            .find(id)
            .first(conn)
            .optional()?
            .ok_or_else(|| StoreError::not_found("token", id))?;
        diesel::delete(admin_tokens::table.find(id)).execute(conn)?;
        audit::record(
            conn,
            now,
            actor,
            "token.delete",
            id,
            serde_json::json!({ "before": token_view(&row)?, "after": null }),
        )?;
        Ok(())
    })
}

/// Makes sure an owner token with exactly this value exists (`KEYGATE_BOOTSTRAP_TOKEN`).
pub fn ensure_bootstrap_token(conn: &mut DbConn, now: i64, token: &str) -> Result<(), StoreError> {
    let hash = hash_token(token);
    write_tx(conn, |conn| {
        let exists: i64 = admin_tokens::table
            .filter(admin_tokens::token_hash.eq(&hash))
            .count()
            .get_result(conn)?;
        if exists > 0 {
            return Ok(());
        }
        let row = TokenRow {
            id: new_id("tok"),
            name: "bootstrap".to_owned(),
            role: Role::Owner.as_str().to_owned(),
            token_hash: hash.clone(),
            created_at: now,
            last_used_at: None,
        };
        // Replicas starting together may both get here: the token's hash is unique, and the
        // one that does not insert it has nothing to do (rather than failing its start).
        let insert = diesel::insert_into(admin_tokens::table)
            .values(&row)
            .on_conflict_do_nothing();
        if crate::with_backend!(conn, |c| insert.execute(c))? == 0 {
            return Ok(());
        }
        audit::record(
            conn,
            now,
            "system",
            "token.create",
            &row.id,
            serde_json::json!({ "before": null, "after": token_view(&row)?, "source": "KEYGATE_BOOTSTRAP_TOKEN" }),
        )?;
        Ok(())
    })
}
