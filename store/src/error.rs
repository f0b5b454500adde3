//! The store's one error type. It knows nothing of HTTP: the control plane maps it to its API
//! error in one `From`, and background jobs log it with its cause.

/// Why a change conflicts with the state of what it names. Each has a stable snake_case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictCode {
    /// The alert was acknowledged already.
    AlreadyAcknowledged,
    /// The key was revoked already.
    AlreadyRevoked,
    /// The key was rotated already (it has a successor).
    AlreadyRotated,
    /// Another admin has this email.
    DuplicateEmail,
    /// The webhook endpoint is disabled.
    EndpointDisabled,
    /// The key is not active (revoked or expired).
    KeyNotActive,
    /// The change would leave no owner.
    LastOwner,
}

impl ConflictCode {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictCode::AlreadyAcknowledged => "already_acknowledged",
            ConflictCode::AlreadyRevoked => "already_revoked",
            ConflictCode::AlreadyRotated => "already_rotated",
            ConflictCode::DuplicateEmail => "duplicate_email",
            ConflictCode::EndpointDisabled => "endpoint_disabled",
            ConflictCode::KeyNotActive => "key_not_active",
            ConflictCode::LastOwner => "last_owner",
        }
    }
}

/// Every error a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// A field is invalid; `field` is its path in the input (`restrictions.referrers[1]`).
    #[error("{field}: {message}")]
    Validation {
        /// Path of the field.
        field: String,
        /// Why.
        message: String,
    },
    /// The key prefix is taken by another project.
    #[error("key_prefix: {0:?} is already used by another project")]
    DuplicatePrefix(String),
    /// The change conflicts with the resource's state.
    #[error("{detail}")]
    Conflict {
        /// Which conflict.
        code: ConflictCode,
        /// Why.
        detail: String,
    },
    /// Anything unexpected (a database failure). Carries its cause, which callers log.
    #[error("internal error: {0:#}")]
    Internal(#[source] anyhow::Error),
}

impl StoreError {
    /// A validation error on `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A missing resource of a kind and id.
    pub fn not_found(what: &str, id: &str) -> Self {
        StoreError::NotFound(format!("{what} {id:?} does not exist"))
    }

    /// A conflict with its detail.
    pub fn conflict(code: ConflictCode, detail: impl Into<String>) -> Self {
        StoreError::Conflict {
            code,
            detail: detail.into(),
        }
    }

    /// Wraps an unexpected error.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        StoreError::Internal(e.into())
    }
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        StoreError::Internal(e.into())
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Internal(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_cause() {
        let e = StoreError::from(diesel::result::Error::NotFound);
        assert!(e.to_string().contains("Record not found"), "{e}");
    }
}
