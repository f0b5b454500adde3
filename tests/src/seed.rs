//! Keys inserted straight into a control plane's database, for benchmarks at a million keys:
//! the API creates a few hundred keys a second, this tens of thousands. Run it while no control
//! plane has built a snapshot of that database (stop it first), so that the next one starts
//! from a full build that includes them.

use std::path::Path;

use keygate_control_plane::db::DbTarget;
use keygate_control_plane::domain::keys::StoredPolicy;
use keygate_control_plane::ids::{KeyId, ProjectId};
use keygate_shared::KeyPrefix;
use keygate_store::seed::{insert_keys as insert, Seed};

/// Inserts `n` live secret keys without restrictions into project `project_id` of the SQLite
/// database in `data_dir`, in one transaction; their plaintexts are not kept.
pub fn insert_keys(
    data_dir: &Path,
    project_id: &str,
    prefix: &str,
    n: usize,
    now_ms: i64,
) -> Result<(), String> {
    let target = DbTarget::from_config(None, data_dir).map_err(|e| e.to_string())?;
    let mut conn = target.establish().map_err(|e| e.to_string())?;
    let seed = Seed {
        project_id: &ProjectId::new(project_id),
        prefix: &KeyPrefix::parse(prefix).map_err(|e| e.to_string())?,
        policy: &StoredPolicy::default(),
        now: now_ms,
    };
    insert(&mut conn, &seed, n, |i| {
        (KeyId::new(format!("key_seeded{i:08}")), "seeded".to_owned())
    })
    .map_err(|e| e.to_string())
}
