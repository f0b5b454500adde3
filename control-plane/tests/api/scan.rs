//! `keygate scan`: the built binary on a folder of files, its output and exit codes, and
//! `--revoke` against a control plane in this process.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use keygate_shared::{Environment, KeyPrefix, Kind, PlaintextKey};

use crate::both_backends;
use crate::helpers::{TestApp, OWNER_TOKEN};

fn keygate_scan() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
    c.arg("scan")
        .env_remove("KEYGATE_TOKEN")
        .env_remove("KEYGATE_URL")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let out: Output = c.output().expect("run keygate scan");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn generated(prefix: &str, kind: Kind, env: Environment) -> String {
    let prefix = KeyPrefix::parse(prefix).unwrap();
    PlaintextKey::generate(&mut rand::rngs::OsRng, &prefix, kind, env).into_string()
}

#[test]
fn scan_reports_key_starts_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sk = generated("acme", Kind::Secret, Environment::Live);
    let pk = generated("shop", Kind::Publishable, Environment::Test);
    let mut bad_sum = sk.clone();
    let last = bad_sum.pop().unwrap();
    bad_sum.push(if last == 'a' { 'b' } else { 'a' });

    write(
        &d.join("src/config.rs"),
        format!("// settings\nconst A: &str = \"x\";\nconst KEY: &str = \"{sk}\";\n"),
    );
    write(
        &d.join(".env"),
        format!("KEYGATE_KEY={pk}\nOTHER={bad_sum}\n"),
    );
    write(
        &d.join("docs/call.sh"),
        format!("curl 'https://api.example.com/orders?key={pk}&x=1'\n"),
    );
    // Skipped: vendored and VCS folders, build output, binary files.
    write(&d.join("node_modules/lib/index.js"), format!("k='{sk}'"));
    write(&d.join(".git/config"), format!("token = {sk}\n"));
    write(&d.join("target/debug/out.txt"), format!("{sk}\n"));
    let mut binary = b"\x7fELF\0\0\0".to_vec();
    binary.extend_from_slice(sk.as_bytes());
    write(&d.join("bin/tool"), binary);
    write(&d.join("README.md"), "nothing to see: acme_sk_live_ here\n");

    let (code, out, err) = run(keygate_scan().arg(d));
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let expected = [
        format!("{}:1: {}…", d.join(".env").display(), &pk[..17]),
        format!("{}:1: {}…", d.join("docs/call.sh").display(), &pk[..17]),
        format!("{}:3: {}…", d.join("src/config.rs").display(), &sk[..17]),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "stderr: {err}");
    assert!(err.contains("3 keys found"), "{err}");
    for whole in [&sk, &pk, &bad_sum] {
        assert!(!out.contains(whole.as_str()) && !err.contains(whole.as_str()));
        // Nothing past the start either.
        assert!(!out.contains(&whole[17..]) && !err.contains(&whole[17..]));
    }

    // A single file, named directly.
    let (code, out, _) = run(keygate_scan().arg(d.join("src/config.rs")));
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 1);

    // Clean files: exit 0, nothing on stdout.
    let (code, out, err) = run(keygate_scan().arg(d.join("README.md")).arg(d.join("bin")));
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.is_empty(), "{out}");

    // An unreadable path: exit 2, message on stderr, other paths still scanned.
    let missing = d.join("no/such/file");
    let (code, out, err) = run(keygate_scan().arg(&missing).arg(d.join(".env")));
    assert_eq!(code, 2, "{out} {err}");
    assert!(
        err.contains("error:") && err.contains("no/such/file"),
        "{err}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    // --revoke without a token is an error before anything is sent.
    let (code, _, err) = run(keygate_scan().arg("--revoke").arg(d));
    assert_eq!(code, 2);
    assert!(err.contains("--token"), "{err}");

    // No path at all is a usage error.
    let (code, _, _) = run(&mut keygate_scan());
    assert_eq!(code, 2);
}

both_backends!(scan_revoke_against_control_plane);

async fn scan_revoke_against_control_plane(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let k = app.secret_key(pid).await;
    let key = k["key"].as_str().unwrap().to_owned();
    let kid = k["id"].as_str().unwrap().to_owned();
    let unknown = generated("acme", Kind::Secret, Environment::Test);

    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("app/settings.py"),
        format!("API_KEY = \"{key}\"\nOTHER = \"{unknown}\"\nAGAIN = \"{key}\"\n"),
    );
    let path = dir.path().to_owned();
    let base = app.base.clone();
    let (code, out, err) = actix_web::rt::task::spawn_blocking(move || {
        run(keygate_scan()
            .arg("--revoke")
            .arg("--url")
            .arg(base)
            .env("KEYGATE_TOKEN", OWNER_TOKEN)
            .arg(&path))
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        out.contains(&format!("revoked {}… ({kid})", &key[..17])),
        "{out}"
    );
    assert!(
        out.contains(&format!("unknown {}…", &unknown[..17])),
        "{out}"
    );
    assert!(!out.contains(&key) && !err.contains(&key));
    assert_eq!(app.verify_code(&key).await, "revoked_key");
    let audit = app
        .get(&format!("/v1/audit?target_id={kid}"), OWNER_TOKEN)
        .await;
    assert_eq!(
        audit.body["items"][0]["details"]["leak"]["source"],
        "keygate-scan"
    );

    // A bad token: exit 2 with the control plane's answer on stderr.
    let path = dir.path().to_owned();
    let base = app.base.clone();
    let (code, _, err) = actix_web::rt::task::spawn_blocking(move || {
        run(keygate_scan()
            .args(["--revoke", "--token", "kgt_wrong", "--url"])
            .arg(base)
            .arg(&path))
    })
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("401"), "{err}");
}
