//! `keygate scan PATH...`: finds Keygate keys in files and folders, and with `--revoke`
//! reports the ones found to a control plane's `POST /v1/leaks`.
//!
//! Folders are walked recursively in name order; `.git`, `target` and `node_modules` are
//! skipped, and so are symbolic links met while walking (named paths are followed), binary
//! files (a NUL byte in the first 8 KiB) and files larger than [`MAX_FILE_BYTES`]. Only the
//! start of a key is ever printed.
//!
//! The HTTP call of `--revoke` goes through awc, the client the control plane already uses for
//! webhooks, so `https://` URLs work with OpenSSL and the system's trusted certificates
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` name others). Redirects are not followed: the token must
//! not travel to another address.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use keygate_shared::scan::find_keys;

use crate::domain::leaks::{LeakOutcome, LeakStatus, MAX_KEYS};

/// Files larger than this are skipped (with a note on standard error).
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Folders never entered.
pub const SKIPPED_DIRS: [&str; 3] = [".git", "target", "node_modules"];
/// How much of a file is looked at to tell binary from text.
const SNIFF_BYTES: usize = 8192;
/// The `source` of leak reports made by the scanner.
pub const SCAN_SOURCE: &str = "keygate-scan";

/// Exit code: no key found.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: at least one key found.
pub const EXIT_FOUND: u8 = 1;
/// Exit code: a path could not be read, or revoking failed.
pub const EXIT_ERROR: u8 = 2;

/// Options of `keygate scan`. `Debug` leaves the token out.
#[derive(Clone)]
pub struct ScanOptions {
    /// Files and folders.
    pub paths: Vec<PathBuf>,
    /// Report live keys to the control plane, which revokes them.
    pub revoke: bool,
    /// Admin or owner API token (needed with `revoke`).
    pub token: Option<String>,
    /// The control plane's base URL.
    pub url: String,
}

impl std::fmt::Debug for ScanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanOptions")
            .field("paths", &self.paths)
            .field("revoke", &self.revoke)
            .field("token", &self.token.as_ref().map(|_| crate::REDACTED))
            .field("url", &self.url)
            .finish()
    }
}

/// A key found in a file.
#[derive(Debug, Clone)]
struct Hit {
    line: usize,
    start: String,
}

#[derive(Default)]
struct Scan {
    errors: usize,
    found: usize,
    /// Distinct keys found (for `--revoke`). Kept in memory only; `Debug` counts them.
    keys: BTreeSet<String>,
}

impl std::fmt::Debug for Scan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("errors", &self.errors)
            .field("found", &self.found)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .finish()
    }
}

impl Scan {
    fn error(&mut self, path: &Path, what: impl std::fmt::Display) {
        eprintln!("error: {}: {what}", path.display());
        self.errors += 1;
    }

    fn path(&mut self, path: &Path, named: bool) {
        let meta = if named {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) => return self.error(path, e),
        };
        if meta.file_type().is_symlink() {
            return;
        }
        if meta.is_dir() {
            self.dir(path);
        } else if meta.is_file() {
            if meta.len() > MAX_FILE_BYTES {
                eprintln!(
                    "note: {}: skipped, larger than {} MiB",
                    path.display(),
                    MAX_FILE_BYTES / (1024 * 1024)
                );
                return;
            }
            self.file(path);
        }
    }

    fn dir(&mut self, path: &Path) {
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) => return self.error(path, e),
        };
        let mut children = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => children.push(e.path()),
                Err(e) => self.error(path, e),
            }
        }
        children.sort();
        for child in children {
            let skip = child
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| SKIPPED_DIRS.contains(&n));
            if skip && child.is_dir() {
                continue;
            }
            self.path(&child, false);
        }
    }

    fn file(&mut self, path: &Path) {
        let mut bytes = Vec::new();
        let read = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes));
        if let Err(e) = read {
            return self.error(path, e);
        }
        if bytes[..bytes.len().min(SNIFF_BYTES)].contains(&0) {
            return;
        }
        // Keys are ASCII: a file in another encoding still shows them intact.
        let text = String::from_utf8_lossy(&bytes);
        let hits: Vec<Hit> = find_keys(&text)
            .map(|f| {
                self.keys.insert(f.key.to_owned());
                Hit {
                    line: f.line,
                    start: f.start(),
                }
            })
            .collect();
        for h in hits {
            println!("{}:{}: {}…", path.display(), h.line, h.start);
            self.found += 1;
        }
    }
}

/// Runs the scan and maps the outcome to the exit code.
pub fn run(opts: ScanOptions) -> ExitCode {
    if opts.revoke && opts.token.as_deref().is_none_or(str::is_empty) {
        eprintln!("error: --revoke needs --token or KEYGATE_TOKEN (an owner or admin API token)");
        return ExitCode::from(EXIT_ERROR);
    }
    let mut scan = Scan::default();
    for p in &opts.paths {
        scan.path(p, true);
    }
    let mut failed = scan.errors > 0;
    if opts.revoke && !scan.keys.is_empty() {
        let token = opts.token.as_deref().unwrap_or_default();
        let keys: Vec<String> = std::mem::take(&mut scan.keys).into_iter().collect();
        for chunk in keys.chunks(MAX_KEYS) {
            match report(&opts.url, token, chunk) {
                Ok(outcome) => {
                    for item in outcome.items {
                        let start = item.start.unwrap_or_default();
                        let id = item.key_id.unwrap_or_default();
                        match item.status {
                            LeakStatus::Revoked => println!("revoked {start}… ({id})"),
                            LeakStatus::AlreadyRevoked => {
                                println!("already revoked {start}… ({id})")
                            }
                            LeakStatus::Unknown => {
                                println!("unknown {start}… (not issued by this control plane)")
                            }
                            LeakStatus::Malformed => println!("malformed key skipped"),
                        }
                    }
                }
                Err(e) => {
                    eprintln!("error: revoking: {e:#}");
                    failed = true;
                    break;
                }
            }
        }
    }
    eprintln!(
        "{} key{} found",
        scan.found,
        if scan.found == 1 { "" } else { "s" }
    );
    ExitCode::from(if failed {
        EXIT_ERROR
    } else if scan.found > 0 {
        EXIT_FOUND
    } else {
        EXIT_CLEAN
    })
}

/// `POST {url}/v1/leaks`.
fn report(base: &str, token: &str, keys: &[String]) -> anyhow::Result<LeakOutcome> {
    let body = serde_json::json!({ "keys": keys, "source": SCAN_SOURCE });
    let (status, response) = post_json(base, "/v1/leaks", token, &body)?;
    if status != 200 {
        let detail = serde_json::from_slice::<serde_json::Value>(&response)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_default();
        bail!("the control plane answered {status}: {detail}");
    }
    serde_json::from_slice(&response).context("reading the control plane's answer")
}

/// `{base}{path}`, for an `http://` or `https://` base URL with a host and no userinfo (a base
/// path is kept).
fn endpoint(base: &str, path: &str) -> anyhow::Result<String> {
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| anyhow!("{base:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        bail!("{base:?} has no usable host");
    }
    if rest.contains(['?', '#']) {
        bail!("{base:?}: a base URL has no query or fragment");
    }
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// A `POST` with a JSON body; returns the status and the body. Runs its own small actix
/// system: the scanner is otherwise synchronous.
fn post_json(
    base: &str,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let url = endpoint(base, path)?;
    let timeout = Duration::from_secs(30);
    actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(timeout)
            .connector(awc::Connector::new().timeout(timeout))
            .finish();
        let mut response = client
            .post(&url)
            .bearer_auth(token)
            .insert_header(("accept", "application/json"))
            .send_json(body)
            .await
            .map_err(|e| anyhow!("POST {url}: {e}"))?;
        let bytes = response
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .map_err(|e| anyhow!("reading the response of {url}: {e}"))?;
        Ok((response.status().as_u16(), bytes.to_vec()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            endpoint("http://127.0.0.1:8080", "/v1/leaks").unwrap(),
            "http://127.0.0.1:8080/v1/leaks"
        );
        assert_eq!(
            endpoint("https://cp.example.com/keygate/", "/v1/leaks").unwrap(),
            "https://cp.example.com/keygate/v1/leaks"
        );
        assert_eq!(
            endpoint("http://[::1]:9000", "/v1/leaks").unwrap(),
            "http://[::1]:9000/v1/leaks"
        );
        assert!(endpoint("ftp://x", "/v1/leaks").is_err());
        assert!(endpoint("http://", "/v1/leaks").is_err());
        assert!(endpoint("https://user:pw@cp.example.com", "/v1/leaks").is_err());
        assert!(endpoint("https://cp.example.com/?a=1", "/v1/leaks").is_err());
    }
}
