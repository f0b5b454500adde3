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

both_backends!(scan_revoke_over_https);

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
fn self_signed() -> (
    openssl::x509::X509,
    openssl::pkey::PKey<openssl::pkey::Private>,
) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509NameBuilder, X509};
    let key = openssl::pkey::PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand::random::<u32>()).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}

/// A TLS front for `backend` (`host:port`): each connection's request is read whole and
/// forwarded with `Connection: close`, and the answer copied back. Returns its port and a count
/// of the requests it forwarded.
fn tls_front(
    backend: String,
    cert: &openssl::x509::X509,
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::sync::atomic::Ordering;
    let mut acceptor =
        openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls()).unwrap();
    acceptor.set_private_key(key).unwrap();
    acceptor.set_certificate(cert).unwrap();
    let acceptor = acceptor.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = forwarded.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            // A client that refuses the certificate ends the handshake: next connection.
            let Ok(tls) = acceptor.accept(conn) else {
                continue;
            };
            let mut reader = BufReader::new(tls);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if !lower.starts_with("connection:") {
                    head.push_str(&line);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut up = std::net::TcpStream::connect(&backend).unwrap();
            up.write_all(head.as_bytes()).unwrap();
            up.write_all(b"Connection: close\r\n\r\n").unwrap();
            up.write_all(&body).unwrap();
            let mut answer = Vec::new();
            up.read_to_end(&mut answer).unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let tls = reader.get_mut();
            let _ = tls.write_all(&answer);
            let _ = tls.shutdown();
        }
    });
    (port, forwarded)
}

async fn scan_revoke_over_https(app: TestApp) {
    use std::sync::atomic::Ordering;
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    let key = app.secret_key(pid).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("src/.env"), format!("KEY={key}\n"));
    let (cert, private) = self_signed();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.to_pem().unwrap()).unwrap();
    // Another certificate, which the front does not use.
    let other = dir.path().join("other.pem");
    std::fs::write(&other, self_signed().0.to_pem().unwrap()).unwrap();
    let backend = app.base.trim_start_matches("http://").to_owned();
    let (port, forwarded) = tls_front(backend, &cert, &private);
    let scan = move |trusted: std::path::PathBuf| {
        let src = dir.path().join("src");
        actix_web::rt::task::spawn_blocking(move || {
            run(keygate_scan()
                .args(["--revoke", "--url"])
                .arg(format!("https://localhost:{port}/"))
                .env("KEYGATE_TOKEN", OWNER_TOKEN)
                .env("SSL_CERT_FILE", trusted)
                .env_remove("SSL_CERT_DIR")
                .arg(src))
        })
    };

    // A certificate the scanner does not trust: nothing is sent, the key stays valid.
    let (code, out, err) = scan(other).await.unwrap();
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    // Refused for its certificate, not for want of a server.
    assert!(
        err.contains("error: revoking") && err.contains("certificate verify failed"),
        "{err}"
    );
    assert_eq!(forwarded.load(Ordering::SeqCst), 0);
    assert_eq!(app.verify_code(&key).await, "valid");

    // Trusted: the report goes over TLS and the key is revoked.
    let (code, out, err) = scan(ca).await.unwrap();
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(&format!("revoked {}…", &key[..17])), "{out}");
    assert_eq!(forwarded.load(Ordering::SeqCst), 1);
    assert_eq!(app.verify_code(&key).await, "revoked_key");
}
