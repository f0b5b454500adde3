//! The request and response bodies of the admin, token and session API. `Debug` leaves
//! passwords and tokens out.

use serde::{Deserialize, Serialize};

use crate::credentials::Role;
use crate::ids::{AdminId, TokenId};

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
    pub id: AdminId,
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
    pub id: TokenId,
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
    pub id: TokenId,
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
