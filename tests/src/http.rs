//! A minimal blocking HTTP/1.1 client and stub server on `std::net`, for talking to `workerd` and
//! for standing in for the services the edge calls, without pulling an HTTP stack into the
//! harness. Plain `http://` only. The client sends one request per connection
//! (`Connection: close`); the stub server does the same unless started with
//! [`StubServer::start_keep_alive`], which keeps connections open as a real origin does.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long a client or the stub server waits on a silent peer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest head (request or status line plus headers) either side accepts.
const MAX_HEAD: usize = 64 * 1024;

/// A response as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The `code` of a problem+json body, or "" for any other body.
    pub fn problem_code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to an `http://host:port/path?query` URL and reads the whole response.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid(format!("only http:// URLs are supported: {url}")))?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .parse::<SocketAddr>()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(authority)?
                .next()
                .ok_or_else(|| invalid(format!("{authority} does not resolve")))
        })
        .map_err(|e| invalid(format!("bad authority in {url}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;

    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if find_header_pairs(headers, "host").is_none() {
        head.push_str(&format!("Host: {authority}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(b) = body {
        stream.write_all(b)?;
    }
    stream.flush()?;

    let mut reader = BufReader::new(stream);
    let (status_line, headers) = read_head(&mut reader)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let bodiless = method.eq_ignore_ascii_case("HEAD")
        || status == 204
        || status == 304
        || (100..200).contains(&status);
    let body = if bodiless {
        Vec::new()
    } else {
        read_body(&mut reader, &headers, true)?
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `GET` with headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    request("GET", url, headers, None)
}

/// A request as the stub server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubRequest {
    /// Method.
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl StubRequest {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }
}

/// What a stub handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubResponse {
    /// Status code.
    pub status: u16,
    /// Headers; `Content-Length` and `Connection` are added.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl StubResponse {
    /// A response with a status and a body of the given content type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        StubResponse {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// A JSON body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "application/json", body)
    }

    /// A status with an empty body.
    pub fn empty(status: u16) -> Self {
        StubResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

type Handler = dyn Fn(&StubRequest) -> StubResponse + Send + Sync;

/// A stub HTTP server on `127.0.0.1`: answers every request with a handler and records what it
/// received. Stops when dropped.
pub struct StubServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<StubRequest>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StubServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl StubServer {
    /// Starts on a free port, one thread per connection.
    pub fn start(
        handler: impl Fn(&StubRequest) -> StubResponse + Send + Sync + 'static,
    ) -> io::Result<StubServer> {
        Self::start_on(0, handler)
    }

    /// Starts on `127.0.0.1:port` (0: a free port), one thread per connection.
    pub fn start_on(
        port: u16,
        handler: impl Fn(&StubRequest) -> StubResponse + Send + Sync + 'static,
    ) -> io::Result<StubServer> {
        Self::spawn(port, false, Arc::new(handler))
    }

    /// Starts on a free port, serving many requests per connection (HTTP/1.1 keep-alive) until
    /// the client closes it, asks to with `Connection: close`, or the server is dropped. A
    /// runtime pools connections to such an origin, so benchmarks through it do not measure a
    /// TCP handshake per request.
    pub fn start_keep_alive(
        handler: impl Fn(&StubRequest) -> StubResponse + Send + Sync + 'static,
    ) -> io::Result<StubServer> {
        Self::spawn(0, true, Arc::new(handler))
    }

    fn spawn(port: u16, keep_alive: bool, handler: Arc<Handler>) -> io::Result<StubServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            thread::Builder::new()
                .name(format!("stub-server-{}", addr.port()))
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (handler, received) = (Arc::clone(&handler), Arc::clone(&received));
                        let stop = Arc::clone(&stop);
                        thread::spawn(move || {
                            // A client that hangs up early is not the stub's problem.
                            let _ = serve(conn, keep_alive, &stop, &*handler, &received);
                        });
                    }
                })?
        };
        Ok(StubServer {
            addr,
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<StubRequest> {
        self.received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    keep_alive: bool,
    stop: &AtomicBool,
    handler: &Handler,
    received: &Mutex<Vec<StubRequest>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let close = serve_one(&mut reader, &mut stream, keep_alive, handler, received)?;
        if close || stop.load(Ordering::SeqCst) {
            return stream.shutdown(Shutdown::Write);
        }
    }
}

/// Reads one request and answers it; true when the connection is to be closed afterwards.
fn serve_one(
    reader: &mut impl BufRead,
    stream: &mut TcpStream,
    keep_alive: bool,
    handler: &Handler,
    received: &Mutex<Vec<StubRequest>>,
) -> io::Result<bool> {
    let (request_line, headers) = read_head(reader)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line {request_line:?}")));
    };
    let body = read_body(reader, &headers, false)?;
    let close = !keep_alive
        || !request_line.ends_with("HTTP/1.1")
        || find_header(&headers, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
    let req = StubRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
    };
    let resp = handler(&req);
    match received.lock() {
        Ok(mut r) => r.push(req),
        Err(poisoned) => poisoned.into_inner().push(req),
    }
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: {}\r\n\r\n",
        resp.body.len(),
        if close { "close" } else { "keep-alive" }
    ));
    // One write: a head and a body sent apart on a kept-alive connection meet Nagle's
    // algorithm and the peer's delayed ACK, a 40 ms stall per response.
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&resp.body);
    stream.write_all(&bytes)?;
    stream.flush()?;
    Ok(close)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn find_header_pairs<'a>(headers: &'a [(&str, &str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> io::Result<String> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(*budget as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the end of the head",
        ));
    }
    *budget = budget.saturating_sub(n);
    if !line.ends_with(b"\n") {
        return Err(invalid("head too large".to_owned()));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("head is not UTF-8".to_owned()))
}

/// Reads a start line and headers, up to the blank line.
fn read_head(reader: &mut impl BufRead) -> io::Result<(String, Vec<(String, String)>)> {
    let mut budget = MAX_HEAD;
    let start = read_line(reader, &mut budget)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut budget)?;
        if line.is_empty() {
            return Ok((start, headers));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// Reads a body framed by `Transfer-Encoding: chunked` or `Content-Length`; without either, a
/// response body runs to the end of the connection and a request has none.
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    is_response: bool,
) -> io::Result<Vec<u8>> {
    let chunked = find_header(headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut budget = MAX_HEAD;
            let size_line = read_line(reader, &mut budget)?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !read_line(reader, &mut budget)?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    }
    if let Some(len) = find_header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if is_response {
        reader.read_to_end(&mut body)?;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_stub() {
        let server = StubServer::start(|req| {
            StubResponse::json(201, format!("{{\"len\":{}}}", req.body.len()))
                .with_header("X-Path", req.path())
        })
        .expect("start stub");
        let url = format!("{}/a/b?c=d", server.url());
        let resp = request("POST", &url, &[("X-Test", "1")], Some(b"hello")).expect("request");
        assert_eq!(resp.status, 201);
        assert_eq!(resp.header("x-path"), Some("/a/b"));
        assert_eq!(resp.text(), r#"{"len":5}"#);
        let got = server.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].method, "POST");
        assert_eq!(got[0].target, "/a/b?c=d");
        assert_eq!(got[0].header("x-test"), Some("1"));
        assert_eq!(got[0].body, b"hello");
    }

    /// Sends raw requests on one connection and reads each response's status and
    /// `Connection` header; `None` once the server has closed the connection.
    fn exchange(stream: &mut TcpStream, raw: &str) -> Option<(String, String)> {
        stream.write_all(raw.as_bytes()).ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let (status, headers) = read_head(&mut reader).ok()?;
        read_body(&mut reader, &headers, true).ok()?;
        let connection = find_header(&headers, "connection")?.to_owned();
        Some((status, connection))
    }

    #[test]
    fn keep_alive_serves_many_requests_per_connection_until_asked_to_close() {
        let server = StubServer::start_keep_alive(|req| StubResponse::json(200, req.path()))
            .expect("start stub");
        let mut conn = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        for path in ["/one", "/two"] {
            let got = exchange(
                &mut conn,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
            );
            assert_eq!(
                got,
                Some(("HTTP/1.1 200 OK".to_owned(), "keep-alive".to_owned()))
            );
        }
        let last = "GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert_eq!(
            exchange(&mut conn, last),
            Some(("HTTP/1.1 200 OK".to_owned(), "close".to_owned()))
        );
        assert_eq!(exchange(&mut conn, "GET /four HTTP/1.1\r\n\r\n"), None);
        let paths: Vec<String> = server.received().iter().map(|r| r.target.clone()).collect();
        assert_eq!(paths, ["/one", "/two", "/three"]);
    }

    #[test]
    fn by_default_the_stub_closes_after_one_request() {
        let server = StubServer::start(|_| StubResponse::empty(204)).expect("start stub");
        let mut conn = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let raw = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            exchange(&mut conn, raw),
            Some(("HTTP/1.1 204 No Content".to_owned(), "close".to_owned()))
        );
        assert_eq!(exchange(&mut conn, raw), None);
        assert_eq!(server.received().len(), 1);
    }

    #[test]
    fn reads_chunked_bodies() {
        let raw = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n";
        let headers = vec![("Transfer-Encoding".to_owned(), "chunked".to_owned())];
        let body = read_body(&mut &raw[..], &headers, true).expect("chunked body");
        assert_eq!(body, b"Wikipedia");
    }
}
