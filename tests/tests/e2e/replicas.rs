//! Two control plane replicas on one PostgreSQL database: a key revoked through the replica the
//! edge does not poll is refused by the edge within its refresh interval.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use diesel::Connection as _;
use keygate_tests::stack::{api, Stack, StackOptions};
use serde_json::json;

/// A PostgreSQL database made for this test on the server of `KEYGATE_TEST_POSTGRES_URL`, dropped
/// with it.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Database {
        let admin_url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect("set KEYGATE_TEST_POSTGRES_URL (`cargo xtask test` sets a default)");
        let name = format!("kg_e2e_{:016x}", rand::random::<u64>());
        let mut conn = diesel::PgConnection::establish(&admin_url)
            .expect("PostgreSQL is reachable at KEYGATE_TEST_POSTGRES_URL");
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        let url = format!("{base}/{name}{query}");
        Database {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut conn) = diesel::PgConnection::establish(&self.admin_url) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
fn a_key_revoked_through_one_replica_is_refused_by_an_edge_polling_the_other() {
    let db = Database::create();
    let stack = Stack::start(StackOptions {
        database_url: Some(db.url.clone()),
        ..StackOptions::default()
    })
    .expect("stack starts (run `cargo xtask build-edge` first)");
    let other = stack.start_replica().expect("a second replica starts");
    let project = stack.api(
        "POST",
        "/v1/projects",
        Some(&json!({"name": "Shop", "key_prefix": "shop"})),
    );
    assert_eq!(project.status, 201, "{}", project.body);
    let pid = project.body["id"].as_str().expect("id").to_owned();
    let (id, key) = stack.create_key(
        &pid,
        &json!({"name": "backend", "kind": "secret", "environment": "live"}),
    );
    let auth = format!("Bearer {key}");
    let status = || stack.edge("GET", "/orders/1", &[("Authorization", &auth)], None);
    assert!(
        Stack::wait_for(Duration::from_secs(15), || status().status == 200).is_some(),
        "the new key never worked at the edge\n{}",
        stack.edge_logs()
    );

    // Revoked through the replica the edge does not poll.
    let asked = Instant::now();
    let r = api(
        &other.url,
        &stack.owner_token,
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(&json!({"reason": "leaked"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The refresh interval, plus a margin for the API call, a snapshot build and a busy machine
    // (as for a revocation through a single control plane).
    let bound = Duration::from_secs_f64(stack.options.refresh_seconds) + Duration::from_secs(3);
    let refused = Stack::wait_for(bound + Duration::from_secs(15), || {
        status().problem_code() == "revoked_key"
    });
    let took = refused.map(|_| asked.elapsed());
    assert!(
        took.is_some_and(|t| t <= bound),
        "the edge refused the key after {took:?} (bound {bound:?})\n{}",
        stack.edge_logs()
    );
    other.stop();
}
