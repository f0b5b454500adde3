//! A stand-in for the Workers Cache API's backend, shared by any number of `workerd` processes,
//! as the isolates of one Cloudflare location share one cache.
//!
//! `workerd` implements `caches.default` and `caches.open(name)` by sending HTTP requests to
//! the service named by the Worker's `cacheApiOutbound` (without one, every Cache API call
//! throws "No Cache was configured"). The protocol, from workerd's `api/cache.c++`:
//!
//! - `match`: `GET <key URL>` with `Cache-Control: only-if-cached`; the answer is a hit only
//!   with `CF-Cache-Status: HIT` (its status, headers and body are the cached response), a miss
//!   with `CF-Cache-Status: MISS`;
//! - `put`: `PUT <key URL>` whose body is the response to store, serialised as an HTTP/1.1
//!   message (its body never chunk-encoded, whatever its headers say); answered 204;
//! - `delete`: `PURGE <key URL>`, answered 200 (deleted) or 404;
//! - a named cache adds `CF-Cache-Namespace: <name>`.
//!
//! [`CacheService`] keeps entries in memory (no expiry, no `Vary`), records every request, and
//! lets a test read or overwrite an entry.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};

use crate::http::{StubRequest, StubResponse, StubServer};

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Status.
    pub status: u16,
    /// Headers, without framing (`Content-Length`, `Transfer-Encoding`).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// `(namespace, host, path)`: `None` for `caches.default`.
type Key = (Option<String>, String, String);

/// The cache service: an HTTP server on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct CacheService {
    server: StubServer,
    entries: Arc<Mutex<HashMap<Key, Entry>>>,
}

fn key_of(req: &StubRequest) -> Key {
    let namespace = req.header("cf-cache-namespace");
    // The request target is a path, or (proxy form) the whole URL.
    split_url(namespace, &req.target).unwrap_or_else(|| {
        (
            namespace.map(str::to_owned),
            req.header("host").unwrap_or_default().to_owned(),
            req.target.clone(),
        )
    })
}

/// Parses a serialised HTTP response (a `PUT` payload).
fn parse_entry(payload: &[u8]) -> io::Result<Entry> {
    let mut reader = BufReader::new(payload);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.trim().parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}"))
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let name = name.trim();
            if !name.eq_ignore_ascii_case("content-length")
                && !name.eq_ignore_ascii_case("transfer-encoding")
            {
                headers.push((name.to_owned(), value.trim().to_owned()));
            }
        }
    }
    let mut body = Vec::new();
    reader.read_to_end(&mut body)?;
    Ok(Entry {
        status,
        headers,
        body,
    })
}

impl CacheService {
    /// Starts on a free port.
    pub fn start() -> io::Result<CacheService> {
        let entries: Arc<Mutex<HashMap<Key, Entry>>> = Arc::default();
        let store = Arc::clone(&entries);
        let server = StubServer::start(move |req| {
            let Ok(mut entries) = store.lock() else {
                return StubResponse::empty(500);
            };
            let key = key_of(req);
            match req.method.as_str() {
                "GET" => match entries.get(&key) {
                    Some(e) => {
                        let mut r = StubResponse::empty(e.status);
                        r.headers = e.headers.clone();
                        r.body = e.body.clone();
                        r.with_header("CF-Cache-Status", "HIT")
                    }
                    None => StubResponse::empty(504).with_header("CF-Cache-Status", "MISS"),
                },
                "PUT" => match parse_entry(&req.body) {
                    Ok(e) => {
                        entries.insert(key, e);
                        StubResponse::empty(204)
                    }
                    Err(_) => StubResponse::empty(400),
                },
                "PURGE" => match entries.remove(&key) {
                    Some(_) => StubResponse::empty(200),
                    None => StubResponse::empty(404),
                },
                _ => StubResponse::empty(405),
            }
        })?;
        Ok(CacheService { server, entries })
    }

    /// `127.0.0.1:PORT`, for a `workerd` external service.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.server.port())
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<StubRequest> {
        self.server.received()
    }

    /// The entry stored under `url` (`https://host/path`) in `namespace`.
    pub fn entry(&self, namespace: Option<&str>, url: &str) -> Option<Entry> {
        let key = split_url(namespace, url)?;
        self.entries.lock().ok()?.get(&key).cloned()
    }

    /// Stores `entry` under `url` in `namespace`, as a `put` would.
    pub fn insert(&self, namespace: Option<&str>, url: &str, entry: Entry) {
        if let (Some(key), Ok(mut entries)) = (split_url(namespace, url), self.entries.lock()) {
            entries.insert(key, entry);
        }
    }
}

fn split_url(namespace: Option<&str>, url: &str) -> Option<Key> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_at(rest.find('/')?);
    Some((
        namespace.map(str::to_owned),
        host.to_owned(),
        path.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_payload_is_parsed_without_its_framing() {
        let payload = b"HTTP/1.1 200 OK\r\nCache-Control: immutable\r\nTransfer-Encoding: chunked\r\n\r\nraw\r\nbody";
        let e = parse_entry(payload).expect("parses");
        assert_eq!(e.status, 200);
        assert_eq!(
            e.headers,
            vec![("Cache-Control".to_owned(), "immutable".to_owned())]
        );
        assert_eq!(e.body, b"raw\r\nbody");
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url(Some("n"), "https://a.invalid/x/y"),
            Some((
                Some("n".to_owned()),
                "a.invalid".to_owned(),
                "/x/y".to_owned()
            ))
        );
        assert_eq!(split_url(None, "https://a.invalid"), None);
    }
}
