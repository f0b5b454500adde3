//! Database access for both backends from one binary.
//!
//! The backend is chosen by the URL's scheme, never by trying one after the other: SQLite
//! accepts any string as a file name, so a failed PostgreSQL connection must not silently
//! become a new SQLite file. Blocking diesel calls run in `web::block` on the pool.

pub mod models;
pub mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// One connection to whichever backend was configured.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    /// PostgreSQL.
    Postgresql(PgConnection),
    /// Embedded SQLite.
    Sqlite(SqliteConnection),
}

impl std::fmt::Debug for DbConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbConn::Postgresql(_) => "DbConn::Postgresql",
            DbConn::Sqlite(_) => "DbConn::Sqlite",
        })
    }
}

/// Runs the same body on the concrete connection, for the statements that do not compile
/// through the multi-connection (upserts, `RETURNING` of whole rows).
#[macro_export]
macro_rules! with_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Postgresql($c) => $body,
            $crate::db::DbConn::Sqlite($c) => $body,
        }
    };
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Which database, parsed from the configuration. `Debug` is [`DbTarget::describe`]: no
/// credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A PostgreSQL connection URL.
    Postgres(String),
    /// A SQLite file.
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbTarget({})", self.describe())
    }
}

impl DbTarget {
    /// `None` means the SQLite file `<data_dir>/keygate.db`; a `postgres://` or
    /// `postgresql://` URL means PostgreSQL; `sqlite://PATH` a SQLite file. Anything else is
    /// refused rather than guessed.
    pub fn from_config(url: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(DbTarget::Sqlite(data_dir.join("keygate.db"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(DbTarget::Postgres(u.to_owned()))
            }
            Some(u) if u.starts_with("sqlite://") => {
                Ok(DbTarget::Sqlite(PathBuf::from(&u["sqlite://".len()..])))
            }
            Some(_) => anyhow::bail!(
                "unsupported DATABASE_URL: use a postgres:// URL, sqlite://PATH, or leave it unset for <data-dir>/keygate.db"
            ),
        }
    }

    /// A description without credentials, for logs.
    pub fn describe(&self) -> String {
        match self {
            DbTarget::Sqlite(p) => format!("sqlite {}", p.display()),
            DbTarget::Postgres(u) => {
                // Drop userinfo: it may carry a password.
                let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                let host = host.split('?').next().unwrap_or(host);
                format!("postgresql {host}")
            }
        }
    }

    /// Opens one connection (outside any pool), with the per-connection settings.
    pub fn establish(&self) -> ConnectionResult<DbConn> {
        match self {
            DbTarget::Postgres(url) => PgConnection::establish(url).map(DbConn::Postgresql),
            DbTarget::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                // Pragmas are per connection.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                )
                .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                Ok(DbConn::Sqlite(conn))
            }
        }
    }
}

/// r2d2 manager that knows the backend up front.
#[derive(Debug)]
pub struct Manager(DbTarget);

impl r2d2::ManageConnection for Manager {
    type Connection = DbConn;
    type Error = ConnectionError;

    fn connect(&self) -> Result<DbConn, ConnectionError> {
        self.0.establish()
    }
    fn is_valid(&self, conn: &mut DbConn) -> Result<(), ConnectionError> {
        conn.batch_execute("SELECT 1")
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))
    }
    fn has_broken(&self, conn: &mut DbConn) -> bool {
        // A connection given back mid-transaction (its rollback failed, typically because the
        // server went away) must not serve the next request: drop it.
        match conn {
            DbConn::Postgresql(c) => AnsiTransactionManager::is_broken_transaction_manager(c),
            DbConn::Sqlite(c) => AnsiTransactionManager::is_broken_transaction_manager(c),
        }
    }
}

/// The connection pool.
pub type Pool = r2d2::Pool<Manager>;
/// A pooled connection.
pub type PooledConn = r2d2::PooledConnection<Manager>;

/// Opens a pool, creating the SQLite file (and switching it to WAL) if needed.
pub fn connect(target: &DbTarget, max_size: Option<u32>) -> anyhow::Result<Pool> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let max_size = max_size.unwrap_or(match target {
        DbTarget::Postgres(_) => 2 * cores,
        DbTarget::Sqlite(_) => 4 * cores,
    });
    if let DbTarget::Sqlite(path) = target {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // WAL is persistent in the file; set it once, outside the pool.
        let mut conn = target.establish()?;
        conn.batch_execute("PRAGMA journal_mode = WAL;")?;
    }
    // PostgreSQL connections take milliseconds to open (a backend process each): keep the pool
    // full so a burst of requests never waits for new ones. SQLite opens a file: open lazily.
    let min_idle = match target {
        DbTarget::Postgres(_) => None,
        DbTarget::Sqlite(_) => Some(1),
    };
    // A PostgreSQL connection can die while idle in the pool (server restart, failover,
    // `pg_terminate_backend`, a proxy dropping it): checking it out with `SELECT 1` (one local
    // round trip) replaces it at once, where an unchecked pool would hand each dead connection
    // to one more request before noticing. A SQLite file does not go away.
    let test_on_check_out = matches!(target, DbTarget::Postgres(_));
    let pool = r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(min_idle)
        .connection_timeout(Duration::from_secs(10))
        .test_on_check_out(test_on_check_out)
        .build(Manager(target.clone()))
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", target.describe()))?;
    Ok(pool)
}

/// The PostgreSQL advisory lock key that migrations run under (any fixed 64-bit number that
/// no other application on the same database uses; this one is "keygate" in ASCII).
pub const MIGRATION_LOCK_KEY: i64 = 0x006b_6579_6761_7465;

/// Applies pending migrations; returns how many ran. On PostgreSQL they run under a session
/// advisory lock, so that replicas starting together take turns: the first applies them, the
/// others wait and then find nothing pending. (SQLite is one file on one host: its write lock
/// already serialises the migrations' transactions.)
pub fn migrate(conn: &mut DbConn) -> anyhow::Result<usize> {
    let applied = match conn {
        DbConn::Postgresql(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                .map_err(|e| anyhow::anyhow!("cannot take the migration lock: {e}"))?;
            let result = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            // Released even when a migration failed; the session's end would release it too.
            let unlocked =
                c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"));
            let applied = result.map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
            unlocked.map_err(|e| anyhow::anyhow!("cannot release the migration lock: {e}"))?;
            applied
        }
        DbConn::Sqlite(c) => c
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?,
    };
    Ok(applied)
}

/// Runs `f` in a write transaction: `BEGIN IMMEDIATE` on SQLite, so the write lock is taken
/// up front and a concurrent writer waits (busy_timeout) instead of failing at its first write.
pub fn write_tx<T, E>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    // SQLite has one writer at a time. Queueing this process's writers on a mutex is fairer
    // and faster than SQLite's busy handler, which sleeps and polls; other processes on the
    // same file still wait through busy_timeout.
    static SQLITE_WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _writer = matches!(conn, DbConn::Sqlite(_)).then(|| {
        SQLITE_WRITER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    });
    match conn {
        DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        DbConn::Postgresql(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    match f(conn) {
        Ok(v) => {
            <DbConn as Connection>::TransactionManager::commit_transaction(conn)?;
            Ok(v)
        }
        Err(e) => {
            // The original error matters more than a failed rollback.
            let _ = <DbConn as Connection>::TransactionManager::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// Runs `f` in a read transaction that sees one consistent state (REPEATABLE READ on
/// PostgreSQL; a SQLite read transaction is a snapshot already).
pub fn read_tx<T, E>(conn: &mut DbConn, f: impl FnOnce(&mut DbConn) -> Result<T, E>) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    conn.transaction(|conn| {
        if let DbConn::Postgresql(c) = conn {
            c.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        }
        f(conn)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme_only() {
        let dir = Path::new("/data");
        assert_eq!(
            DbTarget::from_config(None, dir).unwrap(),
            DbTarget::Sqlite(PathBuf::from("/data/keygate.db"))
        );
        assert_eq!(
            DbTarget::from_config(Some(""), dir).unwrap(),
            DbTarget::Sqlite(PathBuf::from("/data/keygate.db"))
        );
        assert!(matches!(
            DbTarget::from_config(Some("postgres://u@h/db"), dir).unwrap(),
            DbTarget::Postgres(_)
        ));
        assert!(matches!(
            DbTarget::from_config(Some("postgresql://u@h/db"), dir).unwrap(),
            DbTarget::Postgres(_)
        ));
        assert_eq!(
            DbTarget::from_config(Some("sqlite:///tmp/x.db"), dir).unwrap(),
            DbTarget::Sqlite(PathBuf::from("/tmp/x.db"))
        );
        // A key/value connection string or a typo is refused, never taken as a file name.
        for bad in [
            "host=localhost dbname=x",
            "postgre://h/db",
            "mysql://h/db",
            "keygate.db",
        ] {
            assert!(DbTarget::from_config(Some(bad), dir).is_err(), "{bad}");
        }
    }

    #[test]
    fn description_hides_credentials() {
        let t = DbTarget::Postgres(
            "postgres://user:s3cret@db.internal:5432/keygate?sslmode=require".into(),
        );
        let d = t.describe();
        assert!(!d.contains("s3cret") && !d.contains("user"), "{d}");
        assert!(d.contains("db.internal:5432/keygate"), "{d}");
    }
}
