//! The `keygate` binary: migrate, admin create (password on stdin), token create (token alone
//! on one line), signing keys, errors on stderr with a non-zero exit.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::helpers::PgDatabase;

fn keygate(data_dir: &std::path::Path, database_url: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
    c.arg("--data-dir").arg(data_dir);
    c.env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    if let Some(u) = database_url {
        c.env("DATABASE_URL", u);
    }
    c
}

fn run(mut c: Command, stdin: Option<&str>) -> (bool, String, String) {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn keygate");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_flow(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let (ok, _, err) = run(keygate(d, database_url).arg("migrate").clone_cmd(), None);
    assert!(ok, "{err}");
    if database_url.is_none() {
        assert!(d.join("keygate.db").exists());
    }
    assert!(d.join("signing-keys/active").exists());
    // Idempotent.
    let (ok, _, err) = run(keygate(d, database_url).arg("migrate").clone_cmd(), None);
    assert!(ok, "{err}");

    let mut c = keygate(d, database_url);
    c.args([
        "admin",
        "create",
        "--email",
        "ops@example.com",
        "--role",
        "owner",
    ]);
    let (ok, out, err) = run(c, Some("a very good password\n"));
    assert!(ok, "{err}");
    assert!(
        out.contains("adm_") && out.contains("ops@example.com"),
        "{out}"
    );

    let mut c = keygate(d, database_url);
    c.args([
        "admin",
        "create",
        "--email",
        "ops@example.com",
        "--role",
        "owner",
    ]);
    let (ok, _, err) = run(c, Some("a very good password\n"));
    assert!(!ok);
    assert!(
        err.starts_with("error:") && err.contains("already exists"),
        "{err}"
    );

    let mut c = keygate(d, database_url);
    c.args([
        "admin",
        "create",
        "--email",
        "x@example.com",
        "--role",
        "admin",
    ]);
    let (ok, _, err) = run(c, Some("short\n"));
    assert!(!ok);
    assert!(err.contains("password"), "{err}");

    let mut c = keygate(d, database_url);
    c.args([
        "admin",
        "create",
        "--email",
        "x@example.com",
        "--role",
        "root",
    ]);
    let (ok, _, err) = run(c, Some("a very good password\n"));
    assert!(!ok);
    assert!(err.contains("unknown role"), "{err}");

    let mut c = keygate(d, database_url);
    c.args(["token", "create", "--name", "ci", "--role", "edge"]);
    let (ok, out, err) = run(c, None);
    assert!(ok, "{err}");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(
        lines[0].starts_with("kgt_") && lines[0].len() == 44,
        "{out:?}"
    );
    assert_eq!(out, format!("{}\n", lines[0]));

    // Lists, role changes and deletions, never leaving no owner.
    let cmd = |args: &[&str]| keygate(d, database_url).args(args).clone_cmd();
    let (ok, out, err) = run(cmd(&["token", "list"]), None);
    assert!(ok, "{err}");
    let token_line = out
        .lines()
        .find(|l| l.ends_with(" ci"))
        .expect("ci token listed");
    assert!(
        token_line.starts_with("tok_") && token_line.contains(" edge "),
        "{out}"
    );
    assert!(
        !out.contains("kgt_"),
        "a listing never shows a token: {out}"
    );
    let token_id = token_line.split(' ').next().unwrap().to_owned();
    let (ok, _, err) = run(cmd(&["token", "delete", &token_id]), None);
    assert!(ok, "{err}");
    let (ok, out, _) = run(cmd(&["token", "list"]), None);
    assert!(ok && !out.contains(&token_id), "{out}");
    let (ok, _, err) = run(cmd(&["token", "delete", &token_id]), None);
    assert!(!ok && err.contains("does not exist"), "{err}");

    let (ok, out, err) = run(cmd(&["admin", "list"]), None);
    assert!(ok, "{err}");
    assert!(out.contains("ops@example.com owner"), "{out}");
    let (ok, _, err) = run(
        cmd(&["admin", "set-role", "ops@example.com", "--role", "viewer"]),
        None,
    );
    assert!(
        !ok && err.contains("no owner"),
        "the last owner was demoted: {err}"
    );
    let (ok, _, err) = run(cmd(&["admin", "delete", "ops@example.com"]), None);
    assert!(
        !ok && err.contains("no owner"),
        "the last owner was deleted: {err}"
    );
    let mut c = cmd(&[
        "admin",
        "create",
        "--email",
        "second@example.com",
        "--role",
        "owner",
    ]);
    let (ok, _, err) = run(c.clone_cmd(), Some("another good password\n"));
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        cmd(&["admin", "set-role", "ops@example.com", "--role", "viewer"]),
        None,
    );
    assert!(ok, "{err}");
    let (ok, out, _) = run(cmd(&["admin", "list"]), None);
    assert!(ok && out.contains("ops@example.com viewer"), "{out}");
    let (ok, _, err) = run(cmd(&["admin", "delete", "second@example.com"]), None);
    assert!(!ok && err.contains("no owner"), "{err}");
    let (ok, _, err) = run(cmd(&["admin", "delete", "ops@example.com"]), None);
    assert!(ok, "{err}");
    let (ok, out, _) = run(cmd(&["admin", "list"]), None);
    assert!(ok && !out.contains("ops@example.com"), "{out}");

    let (ok, out, err) = run(
        keygate(d, database_url)
            .args(["signing-key", "list"])
            .clone_cmd(),
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("active"));
    let (ok, out, err) = run(
        keygate(d, database_url)
            .args(["signing-key", "rotate"])
            .clone_cmd(),
        None,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("active signing key"));
    let (ok, out, _) = run(
        keygate(d, database_url)
            .args(["signing-key", "list"])
            .clone_cmd(),
        None,
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 2);
    assert!(out.contains("retiring until"));
    // `--retire-after-days 0` retires the previous key at once (a compromised key).
    let (ok, _, err) = run(
        keygate(d, database_url)
            .args(["signing-key", "rotate", "--retire-after-days", "0"])
            .clone_cmd(),
        None,
    );
    assert!(ok, "{err}");
    let (ok, out, _) = run(
        keygate(d, database_url)
            .args(["signing-key", "list"])
            .clone_cmd(),
        None,
    );
    assert!(ok);
    // The key retired 7 days from the first rotation stays; the one just replaced is gone.
    assert_eq!(out.lines().count(), 2, "{out}");
}

trait CloneCmd {
    fn clone_cmd(&mut self) -> Command;
}

impl CloneCmd for Command {
    fn clone_cmd(&mut self) -> Command {
        let mut c = Command::new(self.get_program());
        c.args(self.get_args());
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }
}

#[test]
fn cli_sqlite() {
    cli_flow(None);
}

#[test]
#[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
fn cli_postgres() {
    let db = PgDatabase::create();
    cli_flow(Some(&db.url));
}

#[test]
fn cli_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(
        keygate(dir.path(), Some("mysql://localhost/db"))
            .arg("migrate")
            .clone_cmd(),
        None,
    );
    assert!(!ok);
    assert!(err.contains("unsupported DATABASE_URL"), "{err}");
    let (ok, _, err) = run(
        keygate(
            dir.path(),
            Some("postgres://nobody@127.0.0.1:1/none?connect_timeout=2"),
        )
        .arg("migrate")
        .clone_cmd(),
        None,
    );
    assert!(!ok);
    assert!(err.starts_with("error:"), "{err}");
    assert!(
        !dir.path().join("keygate.db").exists(),
        "no SQLite fallback on a bad PostgreSQL URL"
    );
    let mut c = keygate(dir.path(), None);
    c.arg("serve").env("KEYGATE_BOOTSTRAP_TOKEN", "short");
    let (ok, _, err) = run(c, None);
    assert!(!ok);
    assert!(err.contains("KEYGATE_BOOTSTRAP_TOKEN"), "{err}");
    // Only serve and migrate create a database; the other commands refuse to.
    for args in [
        &["admin", "list"][..],
        &[
            "admin",
            "create",
            "--email",
            "a@example.com",
            "--role",
            "owner",
        ],
        &["admin", "delete", "a@example.com"],
        &["admin", "set-role", "a@example.com", "--role", "admin"],
        &["token", "list"],
        &["token", "create", "--name", "x", "--role", "edge"],
        &["token", "delete", "tok_x"],
    ] {
        let (ok, out, err) = run(
            keygate(&dir.path().join("typo"), None)
                .args(args)
                .clone_cmd(),
            Some("a very good password\n"),
        );
        assert!(!ok, "{args:?}: {out}");
        assert!(err.starts_with("error: no database at"), "{args:?}: {err}");
        assert!(err.contains("keygate migrate"), "{err}");
        assert!(!dir.path().join("typo/keygate.db").exists(), "{args:?}");
    }
    let (ok, _, err) = run(
        keygate(dir.path(), None).arg("frobnicate").clone_cmd(),
        None,
    );
    assert!(!ok);
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
}
