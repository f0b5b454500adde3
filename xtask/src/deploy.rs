//! The control plane as it is deployed: the Debian package (`cargo deb`), checked without root,
//! Docker or a running systemd, and the Docker and compose files, checked statically (this
//! machine has no Docker daemon to run them).
//!
//! `cargo xtask test` builds the package, unpacks it with `dpkg-deb`, checks that the files sit
//! where the systemd unit and the maintainer scripts expect them, runs the unit's `ExecStart`
//! from the unpacked tree with the settings of the packaged environment file (data directory and
//! listen address moved to a scratch directory and port 0) until `/healthz` answers 200, creates
//! the first admin with the CLI as an operator would, and runs `systemd-analyze verify` on the
//! unit where that tool exists.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::process::{cargo, find_tool, run, stdout_of};

/// The `cargo-deb` that builds the package (also pinned in `deploy/Dockerfile`).
pub const CARGO_DEB_VERSION: &str = "3.8.0";
/// The Cargo package of the control plane.
const PACKAGE: &str = "keygate-control-plane";
/// The unit inside the package (cargo-deb installs units under `usr/lib/systemd/system` or
/// `lib/systemd/system`, depending on its version).
const UNIT: &str = "keygate.service";
/// The settings file the unit reads, as installed.
const ENV_FILE: &str = "/etc/keygate/keygate.env";
/// The system user the unit runs as and the maintainer scripts create.
const USER: &str = "keygate";
/// Unit settings without which the service is not the hardened one docs/deploy.md describes.
const REQUIRED_UNIT_SETTINGS: &[(&str, &str)] = &[
    ("User", USER),
    ("StateDirectory", "keygate"),
    ("ReadWritePaths", "/var/lib/keygate"),
    ("WorkingDirectory", "/var/lib/keygate"),
    ("EnvironmentFile", ENV_FILE),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("PrivateTmp", "yes"),
    ("Restart", "on-failure"),
];
/// How long the unpacked service may take to answer `/healthz` before the check fails (it
/// migrates a fresh SQLite database and creates its keys first).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Installs the pinned `cargo-deb` unless it is already there.
pub fn install_cargo_deb() -> Result<()> {
    let installed = find_tool("cargo-deb")
        .and_then(|p| stdout_of(Command::new(p).arg("--version")))
        .unwrap_or_default();
    if installed.split_whitespace().last() == Some(CARGO_DEB_VERSION) {
        return Ok(());
    }
    run(cargo().args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))
}

/// Builds, unpacks and starts the Debian package; checks the Docker and compose files.
pub fn check(root: &Path) -> Result<()> {
    static_checks(root)?;
    let work = root.join("target").join("xtask-deb");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("cannot clear {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    let deb = work.join("keygate.deb");
    // The binary `cargo test --workspace` builds (the step before this one in `cargo xtask
    // test`, so this is a no-op there), packaged as it is: a release build of the control plane
    // takes longer than this whole step on two cores, and even a dev `cargo build` of the
    // package alone recompiles it, its features differing from the test build's. Packaging does
    // not depend on the profile: cargo-deb maps the `target/release/keygate` asset to the
    // profile's directory.
    run(cargo()
        .current_dir(root)
        .args(["test", "--workspace", "--no-run"]))?;
    run(cargo()
        .current_dir(root)
        .args([
            "deb",
            "-p",
            PACKAGE,
            "--profile",
            "dev",
            "--no-build",
            // The dev profile keeps debug information: stripped, the package is a sixth the size.
            "--strip",
            "--fast",
            "--output",
        ])
        .arg(&deb))?;

    let tree = work.join("root");
    let control = work.join("control");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control))?;

    let unit_path = ["usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .map(|d| tree.join(d).join(UNIT))
        .find(|p| p.is_file())
        .with_context(|| format!("the package has no {UNIT}"))?;
    let unit = Unit::parse(&fs::read_to_string(&unit_path)?);
    for (key, want) in REQUIRED_UNIT_SETTINGS {
        ensure!(
            unit.get(key) == Some(*want),
            "{UNIT}: {key}={want} expected, found {:?}",
            unit.get(key)
        );
    }
    let exec = unit.exec_start()?;
    let binary = in_tree(&tree, &exec[0])?;
    ensure!(
        is_executable(&binary),
        "{UNIT}'s ExecStart names {}, which the package does not hold as an executable",
        exec[0]
    );
    let env_path = in_tree(&tree, ENV_FILE)?;
    let settings = EnvFile::parse(
        &fs::read_to_string(&env_path).with_context(|| format!("the package has no {ENV_FILE}"))?,
    );
    let conffiles = fs::read_to_string(control.join("conffiles")).unwrap_or_default();
    ensure!(
        conffiles.lines().any(|l| l.trim() == ENV_FILE),
        "{ENV_FILE} is not a conffile (an upgrade would overwrite the operator's settings)"
    );
    let postinst = fs::read_to_string(control.join("postinst")).context("no postinst")?;
    ensure!(
        postinst.contains("adduser --system") && postinst.contains(&format!(" {USER}\n")),
        "postinst does not create the {USER} system user"
    );
    ensure!(
        postinst.contains(&format!("chown root:{USER} {ENV_FILE}")),
        "postinst does not let {USER} read {ENV_FILE}"
    );
    ensure!(
        settings.value("KEYGATE_DATA_DIR") == unit.get("ReadWritePaths"),
        "KEYGATE_DATA_DIR in {ENV_FILE} is not the unit's writable path"
    );
    for doc in ["deploy.md", "control-plane.md"] {
        let p = tree.join("usr/share/doc/keygate").join(doc);
        ensure!(p.is_file(), "the package lacks {}", p.display());
    }

    start_until_healthy(&work, &binary, &exec[1..], &settings)?;
    verify_unit(&work, &unit_path, &binary)?;
    eprintln!("xtask: the Debian package unpacks, starts and answers /healthz");
    Ok(())
}

/// Runs the service's command line as systemd would (its arguments, only the environment file's
/// settings), with the data directory and listen address moved, until `/healthz` answers 200.
fn start_until_healthy(
    work: &Path,
    binary: &Path,
    args: &[String],
    settings: &EnvFile,
) -> Result<()> {
    let data = work.join("data");
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env_clear()
        .envs(settings.vars.iter().map(|(k, v)| (k, v)))
        .env("KEYGATE_DATA_DIR", &data)
        .env("KEYGATE_LISTEN", "127.0.0.1:0")
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!(
        "$ {} {} (settings of {ENV_FILE}; KEYGATE_DATA_DIR={}, KEYGATE_LISTEN=127.0.0.1:0)",
        binary.display(),
        args.join(" "),
        data.display()
    );
    let mut child = Killed(cmd.spawn().context("cannot start the packaged binary")?);
    let stderr = child.0.stderr.take().context("no stderr")?;
    let (tx, rx) = mpsc::channel();
    // Forwards the service's lines and hands over the address of its banner line.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  | {line}");
            if let Some(addr) = line.strip_prefix("Keygate is listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr: SocketAddr = match rx.recv_timeout(START_DEADLINE) {
        Ok(a) => a
            .parse()
            .context("unreadable listen address in the banner")?,
        Err(_) => bail!(
            "the packaged service did not report listening within {}s (status: {:?})",
            START_DEADLINE.as_secs(),
            child.0.try_wait()
        ),
    };
    let until = Instant::now() + START_DEADLINE;
    loop {
        match healthz(addr) {
            Ok(200) => break,
            Ok(status) => bail!("/healthz answered {status}"),
            Err(e) if Instant::now() >= until => return Err(e.context("/healthz never answered")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    ensure!(
        data.join("keygate.db").is_file() && data.join("signing-keys").is_dir(),
        "the service answered but did not create its database and signing keys in {}",
        data.display()
    );
    eprintln!("xtask: /healthz on {addr} answered 200");
    first_admin(binary, settings, &data)
}

/// The operator's first step (docs/deploy.md) with the same settings, while the service runs:
/// `keygate admin create`, then `keygate admin list` shows the admin.
fn first_admin(binary: &Path, settings: &EnvFile, data: &Path) -> Result<()> {
    const EMAIL: &str = "ops@example.com";
    let cli = |args: &[&str]| {
        let mut c = Command::new(binary);
        c.args(args)
            .env_clear()
            .envs(settings.vars.iter().map(|(k, v)| (k, v)))
            .env("KEYGATE_DATA_DIR", data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut create = cli(&["admin", "create", "--email", EMAIL, "--role", "owner"])
        .spawn()
        .context("cannot run keygate admin create")?;
    create
        .stdin
        .take()
        .context("no stdin")?
        .write_all(b"a long passphrase for the package check\n")?;
    let out = create.wait_with_output()?;
    ensure!(
        out.status.success(),
        "keygate admin create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["admin", "list"]).stdin(Stdio::null()).output()?;
    let list = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && list.contains(EMAIL) && list.contains("owner"),
        "keygate admin list does not show the new owner: {list}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("xtask: keygate admin create and admin list work with the packaged settings");
    Ok(())
}

/// The status code of `GET /healthz`.
fn healthz(addr: SocketAddr) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = String::new();
    s.read_to_string(&mut head)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response: {head:?}"))?;
    Ok(status)
}

/// `systemd-analyze verify` on the packaged unit, with its `ExecStart` pointed at the unpacked
/// binary (verify checks that the executable exists on this machine).
fn verify_unit(work: &Path, unit_path: &Path, binary: &Path) -> Result<()> {
    let Some(tool) = find_tool("systemd-analyze") else {
        eprintln!("xtask: systemd-analyze is not installed; the unit is not verified");
        return Ok(());
    };
    let dir = work.join("verify");
    fs::create_dir_all(&dir)?;
    let text = fs::read_to_string(unit_path)?;
    let moved: String = text
        .lines()
        .map(|l| match l.strip_prefix("ExecStart=") {
            Some(rest) => {
                let args = rest.split_once(' ').map_or("", |(_, a)| a);
                format!("ExecStart={} {args}\n", binary.display())
            }
            None => format!("{l}\n"),
        })
        .collect();
    let copy = dir.join(UNIT);
    fs::write(&copy, moved)?;
    let out = Command::new(tool)
        .arg("verify")
        .arg(&copy)
        .output()
        .context("cannot run systemd-analyze")?;
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // Without a running systemd (a container), verify can still parse the unit; only its
    // complaints about this unit matter.
    let about_unit: Vec<&str> = said.lines().filter(|l| l.contains(UNIT)).collect();
    if !out.status.success() || !about_unit.is_empty() {
        bail!(
            "systemd-analyze verify {UNIT} failed ({}):\n{said}",
            out.status
        );
    }
    eprintln!("xtask: systemd-analyze verify {UNIT}: no complaints");
    Ok(())
}

/// A path of the installed system, inside the unpacked tree.
fn in_tree(tree: &Path, absolute: &str) -> Result<PathBuf> {
    let rel = absolute
        .strip_prefix('/')
        .with_context(|| format!("{absolute} is not an absolute path"))?;
    Ok(tree.join(rel))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Kills the child when dropped, so that a failed check leaves no service running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `key=value` settings of a systemd unit (the last value of a key wins, as for most keys).
struct Unit {
    entries: Vec<(String, String)>,
}

impl Unit {
    fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Unit { entries }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `ExecStart`, split on whitespace (the unit uses no quoting), without systemd's `-@:+!`
    /// prefixes.
    fn exec_start(&self) -> Result<Vec<String>> {
        let line = self.get("ExecStart").context("the unit has no ExecStart")?;
        let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        ensure!(!words.is_empty(), "ExecStart is empty");
        Ok(words)
    }
}

/// An environment file: the settings it sets, and every name it mentions (commented out too).
struct EnvFile {
    vars: Vec<(String, String)>,
    names: BTreeSet<String>,
}

impl EnvFile {
    fn parse(text: &str) -> Self {
        let mut vars = Vec::new();
        let mut names = BTreeSet::new();
        for line in text.lines().map(str::trim) {
            let (commented, body) = match line.strip_prefix('#') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, line),
            };
            let Some((name, value)) = body.split_once('=') else {
                continue;
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                continue;
            }
            names.insert(name.to_owned());
            if !commented {
                let v = value.trim();
                let v = v
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                    .unwrap_or(v);
                vars.push((name.to_owned(), v.to_owned()));
            }
        }
        EnvFile { vars, names }
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The environment variables the control plane reads: every quoted `KEYGATE_*` or
/// `DATABASE_URL` in its source (config.rs, the CLI's `env = "..."`), and `RUST_LOG`, which the
/// log filter reads through `EnvFilter::try_from_default_env`.
fn control_plane_settings(root: &Path) -> Result<BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path)?;
                for quoted in text.split('"').skip(1).step_by(2) {
                    let name_like = quoted
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                    if name_like && (quoted.starts_with("KEYGATE_") || quoted == "DATABASE_URL") {
                        out.insert(quoted.to_owned());
                    }
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(&root.join("control-plane/src"), &mut out)?;
    let telemetry = fs::read_to_string(root.join("control-plane/src/telemetry.rs"))?;
    if telemetry.contains("try_from_default_env") {
        out.insert("RUST_LOG".to_owned());
    }
    Ok(out)
}

/// Checks what cannot run here: the packaged environment file, `deploy/Dockerfile`,
/// `deploy/compose.yaml` and `deploy/Caddyfile` name only settings the control plane reads and
/// paths that exist, and agree with each other.
pub fn static_checks(root: &Path) -> Result<()> {
    let known = control_plane_settings(root)?;
    ensure!(
        known.contains("KEYGATE_LISTEN") && known.contains("DATABASE_URL"),
        "the control plane's settings were not found in its source: {known:?}"
    );
    let unknown = |what: &str, names: &mut dyn Iterator<Item = String>| -> Result<()> {
        let bad: Vec<String> = names.filter(|n| !known.contains(n)).collect();
        ensure!(
            bad.is_empty(),
            "{what} names settings the control plane does not read: {bad:?}"
        );
        Ok(())
    };

    let env_file = EnvFile::parse(&fs::read_to_string(
        root.join("control-plane/debian/keygate.env"),
    )?);
    unknown(
        "control-plane/debian/keygate.env",
        &mut env_file.names.iter().cloned(),
    )?;

    // Dockerfile: build context is the repository root (compose says so too).
    let dockerfile = fs::read_to_string(root.join("deploy/Dockerfile"))?;
    for line in dockerfile.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("COPY ") {
            if rest.starts_with("--from") {
                continue;
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            for src in &words[..words.len().saturating_sub(1)] {
                ensure!(
                    root.join(src).exists(),
                    "deploy/Dockerfile copies {src}, which the repository lacks"
                );
            }
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            unknown(
                "deploy/Dockerfile's ENV",
                &mut rest
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned())),
            )?;
        }
        if let Some(user) = line.strip_prefix("USER ") {
            ensure!(
                user.trim() == USER,
                "deploy/Dockerfile runs as {user}, the package creates {USER}"
            );
        }
    }
    ensure!(
        dockerfile.contains(&format!("cargo-deb --version {CARGO_DEB_VERSION} --locked")),
        "deploy/Dockerfile must install cargo-deb {CARGO_DEB_VERSION}, as `cargo xtask install` does"
    );
    ensure!(
        dockerfile.contains(&format!("cargo deb -p {PACKAGE}")),
        "deploy/Dockerfile must build the package with `cargo deb -p {PACKAGE}`"
    );

    let compose = fs::read_to_string(root.join("deploy/compose.yaml"))?;
    let keygate = compose_service(&compose, "keygate")
        .context("deploy/compose.yaml has no keygate service")?;
    unknown(
        "deploy/compose.yaml's keygate environment",
        &mut block_keys(&keygate, "environment").into_iter(),
    )?;
    ensure!(
        keygate.contains("dockerfile: deploy/Dockerfile") && keygate.contains("context: .."),
        "the keygate service must build deploy/Dockerfile from the repository root"
    );
    let listen = compose_env(&keygate, "KEYGATE_LISTEN")
        .context("the keygate service must set KEYGATE_LISTEN")?;
    ensure!(
        listen.starts_with("0.0.0.0:"),
        "inside the container the control plane must listen on all interfaces, not {listen}"
    );
    let data_dir = compose_env(&keygate, "KEYGATE_DATA_DIR")
        .context("the keygate service must set KEYGATE_DATA_DIR")?;
    ensure!(
        keygate.contains(&format!(":{data_dir}\n")),
        "the keygate service must keep {data_dir} on a volume"
    );
    ensure!(
        compose_env(&keygate, "DATABASE_URL").is_some_and(|u| u.starts_with("postgres://")),
        "the keygate service must use the compose PostgreSQL"
    );
    ensure!(
        compose_service(&compose, "postgres").is_some(),
        "deploy/compose.yaml has no postgres service"
    );
    let caddy =
        compose_service(&compose, "caddy").context("deploy/compose.yaml has no caddy service")?;
    ensure!(
        caddy.contains("./Caddyfile:/etc/caddy/Caddyfile")
            && root.join("deploy/Caddyfile").is_file(),
        "the caddy service must mount deploy/Caddyfile"
    );
    let port = listen.rsplit_once(':').map_or("", |(_, p)| p);
    let caddyfile = fs::read_to_string(root.join("deploy/Caddyfile"))?;
    let upstreams: Vec<&str> = caddyfile
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("reverse_proxy "))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    ensure!(
        !upstreams.is_empty() && upstreams.iter().all(|u| *u == format!("keygate:{port}")),
        "deploy/Caddyfile must proxy to keygate:{port} only, not {upstreams:?}"
    );
    Ok(())
}

/// The lines of a top-level service of a compose file (two-space indentation, as written).
fn compose_service(compose: &str, name: &str) -> Option<String> {
    let mut lines = compose.lines().skip_while(|l| l.trim_end() != "services:");
    lines.next()?;
    let header = format!("  {name}:");
    let mut out = String::new();
    let mut inside = false;
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && indent == 0 {
            break;
        }
        if indent == 2 && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            inside = line.trim_end() == header;
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The keys of a mapping inside a service (`environment:` written as `NAME: value` lines).
fn block_keys(service: &str, block: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut inside = false;
    for line in service.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 4 {
            inside = trimmed == format!("{block}:");
            continue;
        }
        if inside && indent == 6 {
            if let Some((k, _)) = trimmed.split_once(':') {
                keys.push(k.trim().to_owned());
            }
        }
    }
    keys
}

/// The value of one `environment:` entry of a service, unquoted.
fn compose_env(service: &str, name: &str) -> Option<String> {
    service.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(':')?;
        (k == name).then(|| v.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::workspace_root()
    }

    #[test]
    fn docker_compose_and_env_file_name_real_settings_and_paths() {
        static_checks(&root()).unwrap();
    }

    /// A copy of what the static checks read, in a fresh directory under the system's temp.
    fn scratch_root(name: &str) -> PathBuf {
        fn copy(from: &Path, to: &Path) {
            if from.is_dir() {
                fs::create_dir_all(to).unwrap();
                for e in fs::read_dir(from).unwrap() {
                    let e = e.unwrap();
                    copy(&e.path(), &to.join(e.file_name()));
                }
            } else {
                fs::copy(from, to).unwrap();
            }
        }
        let dir = std::env::temp_dir().join(format!("xtask-deploy-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for part in ["control-plane/src", "control-plane/debian", "deploy"] {
            copy(&root().join(part), &dir.join(part));
        }
        dir
    }

    #[test]
    fn a_setting_the_control_plane_does_not_read_is_refused() {
        let dir = scratch_root("unknown");
        static_checks(&dir).unwrap();
        let compose = dir.join("deploy/compose.yaml");
        let text = fs::read_to_string(&compose).unwrap().replace(
            "      KEYGATE_DATA_DIR: /var/lib/keygate\n",
            "      KEYGATE_DATA_DIR: /var/lib/keygate\n      KEYGATE_DATADIR: /srv\n",
        );
        fs::write(&compose, text).unwrap();
        let err = format!("{:#}", static_checks(&dir).unwrap_err());
        assert!(err.contains("KEYGATE_DATADIR"), "{err}");

        let dir = scratch_root("env");
        let env = dir.join("control-plane/debian/keygate.env");
        let text = fs::read_to_string(&env).unwrap() + "#KEYGATE_LISTEN_ADDR=x\n";
        fs::write(&env, text).unwrap();
        let err = format!("{:#}", static_checks(&dir).unwrap_err());
        assert!(err.contains("KEYGATE_LISTEN_ADDR"), "{err}");

        let dir = scratch_root("listen");
        let compose = dir.join("deploy/compose.yaml");
        let text = fs::read_to_string(&compose)
            .unwrap()
            .replace("\"0.0.0.0:8080\"", "\"127.0.0.1:8080\"");
        fs::write(&compose, text).unwrap();
        let err = format!("{:#}", static_checks(&dir).unwrap_err());
        assert!(err.contains("all interfaces"), "{err}");
        for d in ["unknown", "env", "listen"] {
            let _ = fs::remove_dir_all(
                std::env::temp_dir().join(format!("xtask-deploy-{d}-{}", std::process::id())),
            );
        }
    }

    #[test]
    fn settings_are_read_from_the_control_plane_source() {
        let known = control_plane_settings(&root()).unwrap();
        for name in [
            "DATABASE_URL",
            "KEYGATE_LISTEN",
            "KEYGATE_DATA_DIR",
            "KEYGATE_BOOTSTRAP_TOKEN",
            "KEYGATE_TRUSTED_PROXIES",
            "RUST_LOG",
        ] {
            assert!(known.contains(name), "{name} not found in {known:?}");
        }
        assert!(!known.contains("KEYGATE_NOT_A_SETTING"));
    }

    #[test]
    fn env_files_and_units_parse_as_systemd_reads_them() {
        let env = EnvFile::parse(
            "# comment\nKEYGATE_LISTEN=127.0.0.1:8080\n#DATABASE_URL=postgres://x\n\
             KEYGATE_HOST_ENVIRONMENTS='{\"a\":\"live\"}'\nnot a setting\n",
        );
        assert_eq!(env.value("KEYGATE_LISTEN"), Some("127.0.0.1:8080"));
        assert_eq!(
            env.value("KEYGATE_HOST_ENVIRONMENTS"),
            Some("{\"a\":\"live\"}")
        );
        assert_eq!(env.value("DATABASE_URL"), None);
        assert!(env.names.contains("DATABASE_URL"));
        assert_eq!(env.names.len(), 3);

        let unit = Unit::parse("[Service]\n# ExecStart=/bin/false\nExecStart=-/usr/bin/keygate serve\nUser=a\nUser=keygate\n");
        assert_eq!(unit.exec_start().unwrap(), ["/usr/bin/keygate", "serve"]);
        assert_eq!(unit.get("User"), Some("keygate"));
        assert!(Unit::parse("[Service]\n").exec_start().is_err());
    }

    #[test]
    fn compose_services_and_environments_are_read() {
        let compose = "services:\n  db:\n    image: x\n  keygate:\n    environment:\n      \
                       KEYGATE_LISTEN: \"0.0.0.0:8080\"\n      DATABASE_URL: postgres://db\n    \
                       volumes:\n      - data:/var/lib/keygate\nvolumes:\n  data:\n";
        let svc = compose_service(compose, "keygate").unwrap();
        assert_eq!(
            block_keys(&svc, "environment"),
            ["KEYGATE_LISTEN", "DATABASE_URL"]
        );
        assert_eq!(
            compose_env(&svc, "KEYGATE_LISTEN").as_deref(),
            Some("0.0.0.0:8080")
        );
        assert!(compose_service(compose, "data").is_none());
        assert!(compose_service(compose, "missing").is_none());
    }
}
