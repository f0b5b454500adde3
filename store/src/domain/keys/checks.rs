//! The checks of a key spec beyond its types: list sizes, a publishable key's referrers,
//! expiry, metadata size, and that the edge decodes the record unchanged.

use keygate_shared::{Kind, Restrictions, Scope};

use super::{record_from_row, Metadata, MAX_LIST_ITEMS, MAX_METADATA_BYTES};
use crate::db::models::KeyRow;
use crate::error::StoreError;

/// Whatever the API accepts, the edge enforces: a key whose snapshot record the edge's decoder
/// (the same code in the Worker's build) would not give back unchanged is refused here, with
/// the reason, rather than published.
pub(super) fn check_edge_decodes(row: &KeyRow) -> Result<(), StoreError> {
    let record = record_from_row(row)?;
    keygate_shared::record::edge_round_trip(&record)
        .map_err(|e| StoreError::validation("restrictions", e.reason))
}

pub(super) fn check_scopes(mut scopes: Vec<Scope>) -> Result<Vec<Scope>, StoreError> {
    if scopes.len() > MAX_LIST_ITEMS {
        return Err(StoreError::validation(
            "scopes",
            format!("at most {MAX_LIST_ITEMS} scopes"),
        ));
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

pub(super) fn check_restrictions(kind: Kind, r: &Restrictions) -> Result<(), StoreError> {
    if r.referrers.len() > MAX_LIST_ITEMS {
        return Err(StoreError::validation(
            "restrictions.referrers",
            format!("at most {MAX_LIST_ITEMS} patterns"),
        ));
    }
    if r.ips.len() > MAX_LIST_ITEMS {
        return Err(StoreError::validation(
            "restrictions.ips",
            format!("at most {MAX_LIST_ITEMS} networks"),
        ));
    }
    if kind == Kind::Publishable && r.referrers.is_empty() {
        return Err(StoreError::validation(
            "restrictions.referrers",
            "a publishable key needs at least one referrer pattern",
        ));
    }
    Ok(())
}

pub(super) fn check_expiry(expires_at: Option<i64>, now: i64) -> Result<(), StoreError> {
    if expires_at.is_some_and(|e| e <= now) {
        return Err(StoreError::validation(
            "expires_at",
            "must be in the future",
        ));
    }
    Ok(())
}

pub(super) fn check_metadata(m: &Option<Metadata>) -> Result<(), StoreError> {
    let len = m
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(StoreError::internal)?
        .map_or(0, |j| j.len());
    if len > MAX_METADATA_BYTES {
        return Err(StoreError::validation(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}
