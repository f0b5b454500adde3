//! Bulk insert of keys for the benchmarks that need many: rows go straight into `api_keys`, a
//! thousand per statement, without the per-key transaction, audit entry and event of
//! `domain::keys::create`.

use diesel::prelude::*;
use keygate_control_plane::db::models::KeyRow;
use keygate_control_plane::db::schema::api_keys;
use keygate_control_plane::db::DbConn;
use keygate_control_plane::domain::keys::StoredPolicy;
use keygate_control_plane::ids::{KeyId, ProjectId};
use keygate_control_plane::with_backend;
use keygate_shared::{Environment, KeyPrefix, Kind, PlaintextKey, Scope};

/// Inserts `n` live secret keys with prefix `bench` into a project; `id_and_name(i)` gives the
/// `i`th key's id and name. Returns the ids in insertion order.
pub fn seed(
    conn: &mut DbConn,
    project_id: &str,
    n: usize,
    now: i64,
    id_and_name: impl Fn(usize) -> (String, String),
) -> Vec<String> {
    let prefix = KeyPrefix::parse("bench").unwrap();
    let policy = StoredPolicy {
        scopes: vec![Scope::parse("orders:read").unwrap()],
        ..Default::default()
    };
    let policy = serde_json::to_string(&policy).unwrap();
    let mut rng = rand::thread_rng();
    let mut ids = Vec::with_capacity(n);
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1000);
        let rows: Vec<KeyRow> = (0..batch)
            .map(|i| {
                let k = PlaintextKey::generate(&mut rng, &prefix, Kind::Secret, Environment::Live);
                let (id, name) = id_and_name(done + i);
                KeyRow {
                    id: KeyId::new(id),
                    project_id: ProjectId::new(project_id),
                    name,
                    kind: Kind::Secret,
                    environment: Environment::Live,
                    key_hash: k.hash().to_hex(),
                    key_start: k.start(),
                    policy: policy.clone(),
                    expires_at: None,
                    created_at: now,
                    updated_at: now,
                    revoked_at: None,
                    revoked_reason: None,
                    rotated_to: None,
                    rotated_from: None,
                    last_used_at: None,
                }
            })
            .collect();
        ids.extend(rows.iter().map(|r| r.id.to_string()));
        with_backend!(&mut *conn, |c| diesel::insert_into(api_keys::table)
            .values(&rows)
            .execute(c))
        .unwrap();
        done += batch;
    }
    ids
}
