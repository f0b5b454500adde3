//! The browser example (`examples/browser/`) in headless Chromium against the edge in workerd:
//! served on an origin its publishable keys allow, the page reads a 200 (after a preflight), and
//! the problem bodies of a 403 and a 429; served on another origin, it reads nothing, and nothing
//! reaches the origin server.
//!
//! The page calls the edge through a recording proxy, so the test sees what the browser sent
//! (the preflight included) and what the edge answered, which the page itself may not read.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian's `chromium` and
//! `chromium-driver`), so it is `#[ignore]`d: `cargo xtask test` installs both and runs it
//! (`--include-ignored`); by hand, after `cargo xtask build-edge --release`:
//! `cargo test -p keygate-tests --test e2e browser -- --include-ignored`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use keygate_tests::example_app::ExampleApp;
use keygate_tests::http::{self, StubResponse, StubServer};
use keygate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Fails the test, naming what is missing, unless Chromium and chromedriver are installed.
fn require_browser() {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "this browser test needs {} (Debian packages chromium and chromium-driver; \
         `cargo xtask install` installs them)",
        missing.join(" and ")
    );
}

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver on a port it picks itself (`--port=0`) and reads the port from its
/// banner, so that no other process can take the port between choosing and listening.
fn start_chromedriver() -> Driver {
    let mut child = Command::new(CHROMEDRIVER)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromedriver");
    let stdout = child.stdout.take().expect("chromedriver stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the banner, then keeps draining so that chromedriver never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(port) = line
                .split("started successfully on port ")
                .nth(1)
                .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
            {
                let _ = tx.send(port);
            }
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(15));
    if port.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let port = port.expect("chromedriver reports the port it listens on");
    Driver { child, port }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("webdriver session")
}

/// One exchange the proxy passed between the browser and the edge.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    target: String,
    origin: Option<String>,
    request_headers: Option<String>,
    status: u16,
    code: String,
    allow_origin: Option<String>,
}

/// A reverse proxy in front of the edge that records each exchange.
struct Proxy {
    server: StubServer,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl Proxy {
    fn start(edge_url: String) -> Proxy {
        let log = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&log);
        let server = StubServer::start(move |req| {
            // The client adds its own framing headers.
            let skip = ["host", "connection", "content-length", "transfer-encoding"];
            let headers: Vec<(&str, &str)> = req
                .headers
                .iter()
                .filter(|(n, _)| !skip.contains(&n.to_ascii_lowercase().as_str()))
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let body = (!req.body.is_empty()).then_some(req.body.as_slice());
            let answer = match http::request(
                &req.method,
                &format!("{edge_url}{}", req.target),
                &headers,
                body,
            ) {
                Ok(a) => a,
                Err(e) => return StubResponse::new(502, "text/plain", e.to_string()),
            };
            if let Ok(mut log) = record.lock() {
                log.push(Exchange {
                    method: req.method.clone(),
                    target: req.target.clone(),
                    origin: req.header("Origin").map(str::to_owned),
                    request_headers: req
                        .header("Access-Control-Request-Headers")
                        .map(str::to_owned),
                    status: answer.status,
                    code: answer.problem_code(),
                    allow_origin: answer
                        .header("Access-Control-Allow-Origin")
                        .map(str::to_owned),
                });
            }
            let mut response = StubResponse::empty(answer.status);
            response.body = answer.body;
            for (name, value) in &answer.headers {
                if !skip.contains(&name.to_ascii_lowercase().as_str()) {
                    response = response.with_header(name, value);
                }
            }
            response
        })
        .expect("proxy starts");
        Proxy { server, log }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Fills the form as a user would (edge, key, placement), submits it, and returns the outcome
/// the page read (its `keygate:result` event).
async fn send(c: &Client, key: &str, placement: &str) -> Value {
    let script = r#"
        const [key, placement, done] = arguments;
        document.getElementById("key").value = key;
        document.getElementById("placement").value = placement;
        document.addEventListener("keygate:result", (e) => done(e.detail), { once: true });
        document.getElementById("send").click();
    "#;
    c.execute_async(script, vec![json!(key), json!(placement)])
        .await
        .expect("the page reports an outcome")
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .expect(css)
        .text()
        .await
        .expect("text")
}

/// The link `cargo xtask up` prints: the app with the edge, key and path in the fragment.
fn app_link(app: &ExampleApp, edge: &str, key: &str) -> String {
    format!("{}/#edge={edge}&key={key}&path=/orders/1", app.url())
}

#[test]
#[ignore = "needs /usr/bin/chromium and /usr/bin/chromedriver; `cargo xtask test` runs it"]
fn browser_app_reads_answers_on_its_origin_and_nothing_on_another() {
    require_browser();
    let stack = Stack::start(StackOptions::default())
        .expect("stack starts (run `cargo xtask build-edge --release` first)");
    let origin = stack.origin.as_ref().expect("the recording origin");
    let allowed = ExampleApp::start(0).expect("the app on its origin");
    let other = ExampleApp::start(0).expect("the app on a second origin");
    let proxy = Proxy::start(stack.edge_url.clone());

    let project = stack.api(
        "POST",
        "/v1/projects",
        Some(&json!({
            "name": "Web",
            "key_prefix": "web",
            "routes": [{"methods": ["*"], "path": "/orders/*", "scope": "orders:read"}],
        })),
    );
    assert_eq!(project.status, 201, "{}", project.body);
    let project = project.body["id"].as_str().expect("project id").to_owned();
    let publishable = |name: &str, scopes: Value, rate_limit: Value| {
        stack.create_key(
            &project,
            &json!({
                "name": name,
                "kind": "publishable",
                "environment": "live",
                "scopes": scopes,
                "restrictions": {"referrers": [allowed.referrer_pattern()]},
                "rate_limit": rate_limit,
            }),
        )
    };
    let (limited_id, limited) = publishable(
        "limited",
        json!(["orders:read"]),
        json!({"limit": 1, "period_seconds": 3600}),
    );
    let (reader_id, reader) = publishable("reader", json!(["orders:read"]), Value::Null);
    let (_, unscoped) = publishable("unscoped", json!([]), Value::Null);
    // Snapshots are cumulative: once the edge knows the last key, it knows all three. The
    // probe is refused before the origin, and spends no key's rate limit.
    let auth = format!("Bearer {unscoped}");
    let allowed_origin = allowed.url();
    let known = Stack::wait_for(Duration::from_secs(20), || {
        stack
            .edge(
                "GET",
                "/orders/1",
                &[("Authorization", &auth), ("Origin", &allowed_origin)],
                None,
            )
            .problem_code()
            == "insufficient_scope"
    });
    assert!(known.is_some(), "the edge never received the keys");
    assert_eq!(origin.count(), 0);

    let driver = start_chromedriver();
    let profile = tempfile::tempdir().expect("profile dir");
    actix_web::rt::System::new().block_on(async {
        let c = browser(&driver, profile.path()).await;
        let edge = proxy.url();

        // 1. A 200 with the key in `Authorization`: the browser preflights, the edge answers the
        //    preflight itself, and the actual response is readable.
        c.goto(&app_link(&allowed, &edge, &reader))
            .await
            .expect("open the app");
        let out = send(&c, &reader, "authorization").await;
        assert_eq!(out["readable"], true, "{out}");
        assert_eq!(out["status"], 200, "{out}");
        assert_eq!(out["body"]["origin"], "keygate-demo", "{out}");
        assert_eq!(out["body"]["key_id"], reader_id.as_str(), "{out}");
        assert_eq!(text(&c, "#status").await, "HTTP 200");
        let log = proxy.exchanges();
        let preflight = log
            .iter()
            .position(|e| e.method == "OPTIONS")
            .unwrap_or_else(|| panic!("no preflight reached the edge: {log:?}"));
        let get = log
            .iter()
            .position(|e| e.method == "GET")
            .unwrap_or_else(|| panic!("no request reached the edge: {log:?}"));
        assert!(preflight < get, "the preflight comes first: {log:?}");
        let p = &log[preflight];
        assert_eq!(p.target, "/orders/1");
        assert_eq!(p.origin.as_deref(), Some(allowed_origin.as_str()));
        assert!(
            p.request_headers
                .as_deref()
                .is_some_and(|h| h.to_ascii_lowercase().contains("authorization")),
            "{p:?}"
        );
        assert_eq!(p.status, 204, "{p:?}");
        let seen = origin.recorded();
        assert_eq!(seen.len(), 1, "only the GET reaches the origin: {seen:?}");
        assert_eq!(seen[0].request.method, "GET");
        assert_eq!(seen[0].signature_valid, Some(true));
        assert_eq!(seen[0].header("Authorization"), None);

        // 2. `X-API-Key`, preflighted too.
        let out = send(&c, &reader, "x-api-key").await;
        assert_eq!(out["status"], 200, "{out}");
        assert_eq!(out["body"]["key_id"], reader_id.as_str(), "{out}");
        let log = proxy.exchanges();
        assert!(
            log.iter().any(|e| e.method == "OPTIONS"
                && e.request_headers
                    .as_deref()
                    .is_some_and(|h| h.to_ascii_lowercase().contains("x-api-key"))),
            "{log:?}"
        );

        // 3. `?key=`: a simple request, no preflight; the key does not reach the origin.
        let options_before = log.iter().filter(|e| e.method == "OPTIONS").count();
        let out = send(&c, &reader, "query").await;
        assert_eq!(out["status"], 200, "{out}");
        let log = proxy.exchanges();
        assert_eq!(
            log.iter().filter(|e| e.method == "OPTIONS").count(),
            options_before,
            "no preflight for a request without custom headers: {log:?}"
        );
        assert!(log
            .last()
            .is_some_and(|e| e.method == "GET" && e.target.contains("key=")));
        let seen = origin.recorded();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].target(), "/orders/1");

        // 4. A 403: the problem body is readable, and the origin is not contacted.
        let out = send(&c, &unscoped, "authorization").await;
        assert_eq!(out["readable"], true, "{out}");
        assert_eq!(out["status"], 403, "{out}");
        assert_eq!(out["code"], "insufficient_scope", "{out}");
        assert_eq!(out["body"]["status"], 403, "{out}");
        assert_eq!(text(&c, "#code").await, "code: insufficient_scope");
        assert_eq!(origin.count(), 3);

        // 5. A 429 once the limit (1 an hour) is spent; the rate-limit headers are readable.
        let out = send(&c, &limited, "authorization").await;
        assert_eq!(out["status"], 200, "{out}");
        assert_eq!(out["body"]["key_id"], limited_id.as_str(), "{out}");
        assert_eq!(out["rate_limit"]["limit"], "1", "{out}");
        assert_eq!(out["rate_limit"]["remaining"], "0", "{out}");
        assert_eq!(origin.count(), 4);
        let out = send(&c, &limited, "authorization").await;
        assert_eq!(out["status"], 429, "{out}");
        assert_eq!(out["code"], "rate_limited", "{out}");
        assert!(
            out["retry_after"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s > 0),
            "{out}"
        );
        assert_eq!(text(&c, "#code").await, "code: rate_limited");
        assert_eq!(origin.count(), 4);

        // 6. The same app on an origin the key does not list: whichever way the key is sent,
        //    fetch rejects (the edge refuses without CORS headers) and the origin sees nothing.
        let other_origin = other.url();
        c.goto(&app_link(&other, &edge, &reader))
            .await
            .expect("open the app on the second origin");
        for placement in ["authorization", "query"] {
            let before = proxy.exchanges().len();
            let out = send(&c, &reader, placement).await;
            assert_eq!(out["readable"], false, "{placement}: {out}");
            assert!(
                out["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("TypeError")),
                "{placement}: {out}"
            );
            assert!(text(&c, "#status")
                .await
                .starts_with("No readable response"));
            let log = proxy.exchanges();
            let refused: Vec<&Exchange> =
                log[before..].iter().filter(|e| e.method == "GET").collect();
            assert_eq!(refused.len(), 1, "{placement}: {log:?}");
            assert_eq!(refused[0].origin.as_deref(), Some(other_origin.as_str()));
            assert_eq!(refused[0].status, 403, "{placement}: {refused:?}");
            assert_eq!(
                refused[0].code, "referrer_not_allowed",
                "{placement}: {refused:?}"
            );
            assert_eq!(refused[0].allow_origin, None, "{placement}: {refused:?}");
            assert_eq!(origin.count(), 4, "{placement}: the origin saw a request");
        }

        c.close().await.expect("close the browser");
    });
    drop(driver);
}
