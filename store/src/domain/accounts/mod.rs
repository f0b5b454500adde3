//! Admin accounts (argon2 password hashes), session login, and admin API tokens (stored as
//! SHA-256; shown once).
//!
//! Admins and passwords are here; the API's bodies in [`views`]; logins and sessions in
//! [`sessions`]; API tokens in [`tokens`].

mod sessions;
mod tokens;
mod views;

pub use sessions::{
    end_session, find_login, issue_session, session_admin, session_ended, verify_password,
    SessionAdmin, SessionRefused,
};
pub use tokens::{create_token, delete_token, ensure_bootstrap_token, list_tokens};
pub use views::{
    AdminList, AdminView, ChangePassword, CreateAdmin, CreateToken, CreatedToken, Login, Session,
    TokenList, TokenView, UpdateAdmin,
};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use diesel::prelude::*;

use super::{audit, is_unique_violation};
use crate::credentials::Role;
use crate::db::models::AdminRow;
use crate::db::schema::{admins, revoked_sessions};
use crate::db::{write_tx, DbConn};
use crate::error::{ConflictCode, StoreError};
use crate::ids::AdminId;

/// Shortest accepted password.
pub const MIN_PASSWORD_CHARS: usize = 12;
const MAX_PASSWORD_CHARS: usize = 1024;

fn admin_view(r: &AdminRow) -> AdminView {
    AdminView {
        id: r.id.clone(),
        email: r.email.clone(),
        role: r.role,
        created_at: r.created_at,
    }
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
        id: AdminId::generate(),
        email,
        role,
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
        let view = admin_view(&row);
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

/// The admin row with this id, or 404.
pub fn find_admin_row(conn: &mut DbConn, id: &AdminId) -> Result<AdminRow, StoreError> {
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
fn bump_epoch(conn: &mut DbConn, id: &AdminId) -> Result<i64, StoreError> {
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
    id: &AdminId,
    input: UpdateAdmin,
) -> Result<AdminView, StoreError> {
    write_tx(conn, |conn| {
        let row = find_admin_row(conn, id)?;
        let before = admin_view(&row);
        if before.role == input.role {
            return Ok(before);
        }
        if before.role == Role::Owner && owners_locked(conn)? <= 1 {
            return Err(last_owner("demoting this admin"));
        }
        diesel::update(admins::table.find(id))
            .set(admins::role.eq(input.role))
            .execute(conn)?;
        bump_epoch(conn, id)?;
        let after = admin_view(&find_admin_row(conn, id)?);
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
pub fn delete_admin(
    conn: &mut DbConn,
    now: i64,
    actor: &str,
    id: &AdminId,
) -> Result<(), StoreError> {
    write_tx(conn, |conn| {
        let row = find_admin_row(conn, id)?;
        let before = admin_view(&row);
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
    id: &AdminId,
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
    let items = rows.iter().map(admin_view).collect();
    Ok(AdminList { items })
}
