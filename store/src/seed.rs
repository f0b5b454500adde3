//! Keys inserted straight into the database, for benchmarks and tests at a million keys: the
//! API creates a few hundred keys a second (each in its own transaction, with an audit entry and
//! an event), this tens of thousands. Seeded keys bypass `key_changes`, so a control plane that
//! already holds a snapshot publishes them only at its next full build (its next start).

use diesel::prelude::*;
use keygate_shared::{Environment, KeyPrefix, Kind, PlaintextKey};

use crate::db::models::KeyRow;
use crate::db::schema::api_keys;
use crate::db::{write_tx, DbConn};
use crate::domain::keys::StoredPolicy;
use crate::error::StoreError;
use crate::ids::{KeyId, ProjectId};

/// What every seeded key shares.
#[derive(Debug, Clone)]
pub struct Seed<'a> {
    /// The project.
    pub project_id: &'a ProjectId,
    /// The project's key prefix.
    pub prefix: &'a KeyPrefix,
    /// Scopes and restrictions.
    pub policy: &'a StoredPolicy,
    /// `created_at` and `updated_at`.
    pub now: i64,
}

/// 1,000 rows of 16 columns stay under SQLite's limit on bound parameters.
const ROWS: usize = 1000;

/// Inserts `n` live secret keys in one transaction; `id_and_name(i)` gives the `i`th key's id
/// and name. Their plaintexts are not kept.
pub fn insert_keys(
    conn: &mut DbConn,
    seed: &Seed<'_>,
    n: usize,
    id_and_name: impl Fn(usize) -> (KeyId, String),
) -> Result<(), StoreError> {
    let policy = serde_json::to_string(seed.policy).map_err(StoreError::internal)?;
    let mut rng = rand::thread_rng();
    write_tx(conn, |conn| {
        for from in (0..n).step_by(ROWS) {
            let rows: Vec<KeyRow> = (from..(from + ROWS).min(n))
                .map(|i| {
                    let k = PlaintextKey::generate(
                        &mut rng,
                        seed.prefix,
                        Kind::Secret,
                        Environment::Live,
                    );
                    let (id, name) = id_and_name(i);
                    KeyRow {
                        id,
                        project_id: seed.project_id.clone(),
                        name,
                        kind: Kind::Secret,
                        environment: Environment::Live,
                        key_hash: k.hash().to_hex(),
                        key_start: k.start(),
                        policy: policy.clone(),
                        expires_at: None,
                        created_at: seed.now,
                        updated_at: seed.now,
                        revoked_at: None,
                        revoked_reason: None,
                        rotated_to: None,
                        rotated_from: None,
                        last_used_at: None,
                    }
                })
                .collect();
            crate::with_backend!(&mut *conn, |c| diesel::insert_into(api_keys::table)
                .values(&rows)
                .execute(c))?;
        }
        Ok(())
    })
}
