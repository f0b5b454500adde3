//! The benchmarks' keys: live secret keys of prefix `bench` with the scope `orders:read`,
//! inserted straight into the database by `keygate_store::seed`.

use keygate_control_plane::db::DbConn;
use keygate_control_plane::domain::keys::StoredPolicy;
use keygate_control_plane::ids::{KeyId, ProjectId};
use keygate_shared::{KeyPrefix, Scope};
use keygate_store::seed::{insert_keys, Seed};

/// Inserts `n` keys into a project; `id_and_name(i)` gives the `i`th key's id and name.
/// Returns the ids in insertion order.
pub fn seed(
    conn: &mut DbConn,
    project_id: &str,
    n: usize,
    now: i64,
    id_and_name: impl Fn(usize) -> (String, String),
) -> Vec<String> {
    let policy = StoredPolicy {
        scopes: vec![Scope::parse("orders:read").unwrap()],
        ..Default::default()
    };
    let seed = Seed {
        project_id: &ProjectId::new(project_id),
        prefix: &KeyPrefix::parse("bench").unwrap(),
        policy: &policy,
        now,
    };
    insert_keys(conn, &seed, n, |i| {
        let (id, name) = id_and_name(i);
        (KeyId::new(id), name)
    })
    .unwrap();
    (0..n).map(|i| id_and_name(i).0).collect()
}
