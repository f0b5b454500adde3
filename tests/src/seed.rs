//! Keys inserted straight into a control plane's database, for benchmarks at a million keys:
//! the API creates a few hundred keys a second, this tens of thousands. Run it while no control
//! plane has built a snapshot of that database (stop it first), so that the next one starts
//! from a full build that includes them.

use std::path::Path;

use diesel::{Connection, RunQueryDsl};
use keygate_control_plane::db::models::KeyRow;
use keygate_control_plane::db::schema::api_keys;
use keygate_control_plane::db::DbTarget;
use keygate_control_plane::domain::keys::StoredPolicy;
use keygate_control_plane::ids::{KeyId, ProjectId};
use keygate_control_plane::with_backend;
use keygate_shared::{Environment, KeyPrefix, Kind, PlaintextKey};

/// Inserts `n` live secret keys without restrictions into project `project_id` of the SQLite
/// database in `data_dir`, in one transaction; their plaintexts are not kept.
pub fn insert_keys(
    data_dir: &Path,
    project_id: &str,
    prefix: &str,
    n: usize,
    now_ms: i64,
) -> Result<(), String> {
    let prefix = KeyPrefix::parse(prefix).map_err(|e| e.to_string())?;
    let policy = serde_json::to_string(&StoredPolicy::default()).map_err(|e| e.to_string())?;
    let target = DbTarget::from_config(None, data_dir).map_err(|e| e.to_string())?;
    let mut conn = target.establish().map_err(|e| e.to_string())?;
    let mut rng = rand::thread_rng();
    let mut batch = |from: usize, to: usize| -> Vec<KeyRow> {
        (from..to)
            .map(|i| {
                let k = PlaintextKey::generate(&mut rng, &prefix, Kind::Secret, Environment::Live);
                KeyRow {
                    id: KeyId::new(format!("key_seeded{i:08}")),
                    project_id: ProjectId::new(project_id),
                    name: "seeded".to_owned(),
                    kind: Kind::Secret,
                    environment: Environment::Live,
                    key_hash: k.hash().to_hex(),
                    key_start: k.start(),
                    policy: policy.clone(),
                    expires_at: None,
                    created_at: now_ms,
                    updated_at: now_ms,
                    revoked_at: None,
                    revoked_reason: None,
                    rotated_to: None,
                    rotated_from: None,
                    last_used_at: None,
                }
            })
            .collect()
    };
    // 1,000 rows of 16 columns stay under SQLite's limit on bound parameters.
    const ROWS: usize = 1000;
    with_backend!(&mut conn, |c| c.transaction::<_, diesel::result::Error, _>(
        |c| {
            for from in (0..n).step_by(ROWS) {
                let rows = batch(from, (from + ROWS).min(n));
                diesel::insert_into(api_keys::table)
                    .values(&rows)
                    .execute(c)?;
            }
            Ok(())
        }
    ))
    .map_err(|e| e.to_string())
}
