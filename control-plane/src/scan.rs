//! `keygate scan PATH...`: finds Keygate keys in files and folders, and with `--revoke`
//! reports the ones found to a control plane's `POST /v1/leaks`.
//!
//! Folders are walked recursively in name order; `.git`, `target` and `node_modules` are
//! skipped, and so are symbolic links met while walking (named paths are followed), binary
//! files (a NUL byte in the first 8 KiB) and files larger than [`MAX_FILE_BYTES`]. Only the
//! start of a key is ever printed.
//!
//! The HTTP call of `--revoke` is a plain HTTP/1.1 request on a `TcpStream`: the workspace has
//! no blocking HTTP client, and the control plane itself speaks plain HTTP (put TLS in front of
//! it with a proxy). `https://` URLs are refused with a clear message.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
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
    let body = serde_json::to_vec(&serde_json::json!({ "keys": keys, "source": SCAN_SOURCE }))?;
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

/// Splits `http://host[:port][/base]` into the address, the `Host` header and the base path.
fn split_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        bail!("only http:// URLs are supported by the scanner; reach an https control plane through a local proxy or port-forward");
    } else {
        bail!("{url:?} is not an http:// URL");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        bail!("{url:?} has no usable host");
    }
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, authority.to_owned(), path.to_owned()))
}

/// A blocking `POST` with a JSON body; returns the status and the (de-chunked) body.
fn post_json(base: &str, path: &str, token: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let (addr, host, prefix) = split_url(base)?;
    let timeout = Duration::from_secs(30);
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_end(&mut raw)
        .context("reading the response")?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response"))?;
    let head = std::str::from_utf8(&raw[..end]).context("HTTP response head")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &raw[end + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("malformed chunked body"))?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).context("chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (a, h, p) = split_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (a.as_str(), h.as_str(), p.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080", "")
        );
        let (a, _, p) = split_url("http://cp.internal/keygate/").unwrap();
        assert_eq!((a.as_str(), p.as_str()), ("cp.internal:80", "/keygate"));
        let (a, _, _) = split_url("http://[::1]:9000").unwrap();
        assert_eq!(a, "[::1]:9000");
        let (a, _, _) = split_url("http://[::1]").unwrap();
        assert_eq!(a, "[::1]:80");
        assert!(split_url("https://cp.example.com").is_err());
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("http://").is_err());
    }

    #[test]
    fn responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (403, &b"{\"a\":1}"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
