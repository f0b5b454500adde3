//! The PostgreSQL run of a benchmark: a fresh database on the server of
//! `KEYGATE_TEST_POSTGRES_URL`, dropped afterwards.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// Runs `run` with the URL of a new database named after `tag`, then drops it; says so and
/// does nothing when `KEYGATE_TEST_POSTGRES_URL` is not set.
pub async fn with_database<F: std::future::Future<Output = ()>>(
    tag: &str,
    run: impl FnOnce(String) -> F,
) {
    let Ok(url) = std::env::var("KEYGATE_TEST_POSTGRES_URL") else {
        println!("PostgreSQL skipped: KEYGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let name = format!("kg_bench_{tag}_{}", std::process::id());
    let mut admin = PgConnection::establish(&url).expect("postgres");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let base = url.split('?').next().unwrap();
    run(format!("{}/{name}", base.rsplit_once('/').unwrap().0)).await;
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}
