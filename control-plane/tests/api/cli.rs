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

/// A running `keygate serve`, killed when dropped.
struct Served {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(data_dir: &std::path::Path) -> Served {
        use std::io::BufRead as _;
        let mut child = keygate(data_dir, None)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("KEYGATE_BOOTSTRAP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keygate serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Served { child, lines }
    }

    /// Standard error up to and including the console's URL.
    fn until_console(&self) -> Vec<String> {
        let mut out = Vec::new();
        // Only a bound on a hung start: the test waits for the line, not for a time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !out.iter().any(|l: &String| l.starts_with("Console: ")) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(e) => panic!("no console URL ({e}) in {out:?}"),
            }
        }
        out
    }

    /// Stops the server and returns the rest of its standard error. The banner is written at
    /// once, before the server is stopped, so whatever it has past the URL is in here.
    fn stop(self) -> Vec<String> {
        let mut this = self;
        let _ = this.child.kill();
        let _ = this.child.wait();
        this.lines.iter().collect()
    }
}

/// Status line of a plain GET.
fn http_status(url_base: &str, path: &str) -> String {
    use std::io::Read as _;
    let host = url_base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).expect("connect to the printed address");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.lines().next().unwrap_or("").to_owned()
}

#[test]
fn serve_prints_the_console_url_and_the_first_admin_command() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let head = served.until_console();
    let console = head
        .iter()
        .find_map(|l| l.strip_prefix("Console: "))
        .unwrap_or_else(|| panic!("no console URL in {head:?}"))
        .to_owned();
    let base = console
        .strip_suffix("/console/")
        .unwrap_or_else(|| panic!("{console}"));
    assert!(
        !base.ends_with(":0"),
        "the bound port, not the one asked for: {console}"
    );
    // The printed URL is the one that serves the console.
    assert!(
        http_status(base, "/console/login").contains(" 200 "),
        "{console}"
    );
    let rest = served.stop();
    assert!(
        rest.iter().any(|l| l.starts_with("No admin exists yet")),
        "{head:?} {rest:?}"
    );
    let command = rest
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("keygate "))
        .unwrap_or_else(|| panic!("no command in {rest:?}"));

    // The printed command, run as printed from another folder, creates an owner.
    let words: Vec<&str> = command.split_whitespace().collect();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
    c.args(&words[1..])
        .current_dir(elsewhere.path())
        .env_remove("DATABASE_URL")
        .env_remove("KEYGATE_DATA_DIR");
    let (ok, out, err) = run(c, Some("a very good password\n"));
    assert!(ok, "{command}: {err}");
    assert!(out.contains("with role owner"), "{out}");

    // With an admin, serve prints the URL and no longer the command.
    let served = Served::start(dir.path());
    let head = served.until_console();
    assert!(
        head.iter()
            .any(|l| l.starts_with("Console: http://127.0.0.1:")),
        "{head:?}"
    );
    let rest = served.stop();
    assert!(
        !head
            .iter()
            .chain(&rest)
            .any(|l| l.starts_with("No admin") || l.trim().starts_with("keygate ")),
        "{head:?} {rest:?}"
    );
}

#[test]
fn serve_banner_quotes_the_data_dir_and_opens_wildcard_addresses_on_loopback() {
    use keygate_control_plane::cli::serve_banner;
    let b = serve_banner(
        "0.0.0.0:8080".parse().unwrap(),
        Some((std::path::Path::new("/srv/key gate's"), false)),
    );
    assert!(b.contains("Console: http://127.0.0.1:8080/console/"), "{b}");
    assert!(
        b.contains("keygate --data-dir '/srv/key gate'\\''s' admin create"),
        "{b}"
    );
    let b = serve_banner(
        "[::]:9000".parse().unwrap(),
        Some((std::path::Path::new("/d"), true)),
    );
    assert!(b.contains("Console: http://[::1]:9000/console/"), "{b}");
    assert!(b.contains("DATABASE_URL"), "{b}");
    assert!(!b.contains("--data-dir"), "{b}");
    let b = serve_banner("10.0.0.5:80".parse().unwrap(), None);
    assert!(b.contains("Console: http://10.0.0.5:80/console/"), "{b}");
    assert!(!b.contains("admin create"), "{b}");
}
