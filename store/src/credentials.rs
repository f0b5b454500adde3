//! Credentials of admins and API tokens as values: roles, API token generation and hashing,
//! session token keys and claims. No HTTP and no database: the domain and the control plane's
//! request layer both build on it.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// Never change this prefix: existing tokens are recognised by it.
pub const TOKEN_PREFIX: &str = "kgt_";
const TOKEN_RANDOM_LEN: usize = 40;

/// An admin's or token's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including admins and tokens.
    Owner,
    /// Projects and keys; read everything.
    Admin,
    /// Read everything.
    Viewer,
    /// Read the snapshot and public keys, post usage.
    Edge,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Edge => "edge",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            "edge" => Some(Role::Edge),
            _ => None,
        }
    }

    /// Every role.
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Viewer, Role::Edge];
}

keygate_shared::text_column!(Role, Role::parse, Role::as_str);

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `tok_...` or `adm_...`.
    pub actor: String,
    /// The role in force.
    pub role: Role,
}

/// SHA-256 hex of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new admin API token from the OS CSPRNG.
pub fn generate_token() -> String {
    const BASE62: &[u8] = keygate_shared::key::BASE62;
    let mut rng = rand::rngs::OsRng;
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_RANDOM_LEN);
    s.push_str(TOKEN_PREFIX);
    for _ in 0..TOKEN_RANDOM_LEN {
        s.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
    s
}

/// Session token claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Admin id.
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// A random id, so that two sessions issued in the same second are two tokens and logging
    /// out of one leaves the other.
    #[serde(default)]
    pub jti: String,
    /// The admin's session epoch at issue; a session is refused once the admin's epoch has
    /// moved on (a demotion or a password change).
    #[serde(default)]
    pub sep: i64,
}

/// HS256 keys for session tokens.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    /// From a secret.
    pub fn new(secret: &[u8]) -> Self {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Issues a session token for `admin_id` (whose session epoch is `epoch`) valid until
    /// `exp_ms`.
    pub fn issue(
        &self,
        admin_id: &str,
        epoch: i64,
        now_ms: i64,
        exp_ms: i64,
    ) -> Result<String, StoreError> {
        let claims = Claims {
            sub: admin_id.to_owned(),
            iat: now_ms / 1000,
            exp: exp_ms / 1000,
            jti: hex::encode(rand::random::<[u8; 16]>()),
            sep: epoch,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(StoreError::internal)
    }

    /// Checks a session token's signature, and its expiry against our clock (not the system's,
    /// so tests can move time).
    pub fn decode(&self, token: &str, now_ms: i64) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims = ["exp", "sub"].iter().map(|s| (*s).to_owned()).collect();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).ok()?;
        (data.claims.exp * 1000 > now_ms).then_some(data.claims)
    }
}
