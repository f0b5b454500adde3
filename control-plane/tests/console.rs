//! The admin console: security headers and cookie flags over plain HTTP, then the daily work
//! in headless Chromium through chromedriver. Screenshots of each page go to
//! target/console-screenshots/.
//!
//! The browser tests need /usr/bin/chromium and /usr/bin/chromedriver (Debian's `chromium` and
//! `chromium-driver`), so they are `#[ignore]`d: a plain `cargo test` reports them as ignored.
//! `cargo xtask test` installs both and runs them (`--include-ignored`); run by hand with
//! `cargo test -p keygate-control-plane --test console -- --include-ignored`. Once running, a
//! browser test fails, naming the missing file, when either is absent.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use keygate_control_plane::auth::Role;
use keygate_control_plane::domain::accounts::{create_admin, CreateAdmin};
use keygate_control_plane::{Application, Config};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const OWNER_EMAIL: &str = "owner@example.com";
const VIEWER_EMAIL: &str = "viewer@example.com";
const PASSWORD: &str = "correct horse battery staple";

struct TestApp {
    base: String,
    _dir: tempfile::TempDir,
    owner_id: String,
    state: actix_web::web::Data<keygate_control_plane::state::AppState>,
}

async fn start() -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path());
    config.listen = "127.0.0.1:0".to_owned();
    let app = Application::build(config).await.expect("build app");
    let state = app.state();
    let mut conn = state.pool.get().expect("connection");
    let now = state.clock.now_ms();
    let mut owner_id = String::new();
    for (email, role) in [(OWNER_EMAIL, Role::Owner), (VIEWER_EMAIL, Role::Viewer)] {
        let admin = create_admin(
            &mut conn,
            now,
            "system",
            CreateAdmin {
                email: email.to_owned(),
                role,
                password: PASSWORD.to_owned(),
            },
        )
        .expect("create admin");
        if role == Role::Owner {
            owner_id = admin.id.into_string();
        }
    }
    drop(conn);
    let base = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        base,
        _dir: dir,
        owner_id,
        state,
    }
}

/// A client that does not follow redirects. Logins hash passwords with Argon2, which takes
/// seconds on a busy machine while the browser test runs alongside: wait longer than awc's
/// default 5 s.
fn http_client() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(60))
        .finish()
}

fn header(resp: &awc::ClientResponse<impl Sized>, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[actix_web::test]
async fn security_headers_and_session_cookie() {
    let app = start().await;
    let client = http_client();

    let resp = client
        .get(format!("{}/console/login", app.base))
        .send()
        .await
        .expect("get login");
    assert_eq!(resp.status(), 200);
    let csp = header(&resp, "content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(header(&resp, "x-frame-options"), "DENY");
    assert_eq!(header(&resp, "referrer-policy"), "no-referrer");

    // Pages need a session.
    let resp = client
        .get(format!("{}/console/projects", app.base))
        .send()
        .await
        .expect("get projects");
    assert_eq!(resp.status(), 303);
    assert_eq!(header(&resp, "location"), "/console/login");

    // Wrong password: no cookie.
    let resp = client
        .post(format!("{}/console/login", app.base))
        .send_form(&[("email", OWNER_EMAIL), ("password", "wrong password here")])
        .await
        .expect("bad login");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());

    // Plain HTTP: HttpOnly, SameSite=Strict, Path=/console, not Secure.
    let resp = client
        .post(format!("{}/console/login", app.base))
        .send_form(&[("email", OWNER_EMAIL), ("password", PASSWORD)])
        .await
        .expect("login");
    assert_eq!(resp.status(), 303);
    let cookie = header(&resp, "set-cookie");
    assert!(cookie.starts_with("keygate_session="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(flag), "{flag} missing in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");

    // Behind a TLS proxy: Secure.
    let resp = client
        .post(format!("{}/console/login", app.base))
        .insert_header(("X-Forwarded-Proto", "https"))
        .send_form(&[("email", OWNER_EMAIL), ("password", PASSWORD)])
        .await
        .expect("login https");
    let cookie = header(&resp, "set-cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");

    // The embedded assets.
    let mut resp = client
        .get(format!("{}/console/assets/console.css", app.base))
        .send()
        .await
        .expect("css");
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").starts_with("text/css"));
    let css = resp.body().await.expect("css body");
    assert_eq!(
        css.as_ref(),
        include_bytes!("../src/console/assets/console.css"),
        "the stylesheet served is the one in the source"
    );
}

/// Logs in over plain HTTP and returns the session cookie (`name=value`).
async fn session_cookie(client: &awc::Client, base: &str) -> String {
    let resp = client
        .post(format!("{base}/console/login"))
        .send_form(&[("email", OWNER_EMAIL), ("password", PASSWORD)])
        .await
        .expect("login");
    assert_eq!(resp.status(), 303);
    header(&resp, "set-cookie")
        .split(';')
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn page(client: &awc::Client, base: &str, cookie: &str, path: &str) -> String {
    let mut resp = client
        .get(format!("{base}{path}"))
        .insert_header(("cookie", cookie))
        .send()
        .await
        .expect("get page");
    assert_eq!(resp.status(), 200, "{path}");
    String::from_utf8(resp.body().await.expect("body").to_vec()).expect("utf-8")
}

#[actix_web::test]
async fn audit_log_pages_through_filtered_entries() {
    use keygate_control_plane::domain::audit;
    let app = start().await;
    let state = app.state.clone();
    let mut conn = state.pool.get().expect("connection");
    let now = state.clock.now_ms();
    // More matching entries than one page holds, behind more recent ones that do not match.
    for i in 0..105 {
        audit::record(
            &mut conn,
            now,
            "system",
            "test.entry",
            &format!("t{i}"),
            json!({}),
        )
        .expect("record");
    }
    for i in 0..150 {
        audit::record(
            &mut conn,
            now,
            "system",
            "test_other",
            &format!("o{i}"),
            json!({}),
        )
        .expect("record");
    }
    drop(conn);
    let client = http_client();
    let cookie = session_cookie(&client, &app.base).await;
    let rows = |html: &str| html.matches("<td class=\"action\">test.entry</td>").count();
    let first = page(&client, &app.base, &cookie, "/console/audit?action=test.").await;
    assert_eq!(rows(&first), 100, "a full first page of matches");
    assert!(!first.contains("test_other"));
    let older = first
        .split("id=\"older\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to older entries")
        .replace("&amp;", "&");
    assert!(older.contains("action=test."), "{older}");
    let second = page(&client, &app.base, &cookie, &older).await;
    assert_eq!(rows(&second), 5);
    assert!(!second.contains("id=\"older\""));
}

#[actix_web::test]
async fn usage_charts_and_last_used() {
    use keygate_control_plane::domain::{keys, projects, usage};
    let app = start().await;
    let state = app.state.clone();
    let now = state.clock.now_ms();
    let mut conn = state.pool.get().expect("connection");
    let project = projects::create(
        &mut conn,
        now,
        "system",
        serde_json::from_value(json!({"name": "Shop", "key_prefix": "shop"})).expect("spec"),
    )
    .expect("project");
    let spec = || {
        serde_json::from_value(json!({"name": "server", "kind": "secret", "environment": "live"}))
            .expect("spec")
    };
    let used = keys::create(&mut conn, now, "system", &project.id, spec()).expect("key");
    let unused = keys::create(&mut conn, now, "system", &project.id, spec()).expect("key");
    let minute = now.div_euclid(60_000) * 60_000;
    let report = serde_json::from_value(json!({"items": [
        {"key_id": used.view.id, "minute": keygate_control_plane::timefmt::format_ms(minute), "code": "valid", "count": 7},
        {"key_id": used.view.id, "minute": keygate_control_plane::timefmt::format_ms(minute), "code": "rate_limited", "count": 2}
    ]}))
    .expect("report");
    usage::record(&mut conn, report).expect("record usage");
    drop(conn);

    let client = http_client();
    let cookie = session_cookie(&client, &app.base).await;
    let stamp = keygate_control_plane::timefmt::format_ms(minute);

    // The key page: last use, and the chart at each granularity with links to the others.
    let key_path = format!("/console/keys/{}", used.view.id);
    for (g, current, caption) in [
        ("", "per hour", "Per hour, last 24 hours: "),
        (
            "?granularity=minute",
            "per minute",
            "Per minute, last 60 minutes: ",
        ),
        ("?granularity=day", "per day", "Per day, last 30 days: "),
    ] {
        let html = page(&client, &app.base, &cookie, &format!("{key_path}{g}")).await;
        assert!(html.contains(&stamp), "last used shown: {g}");
        assert!(html.contains(r#"<svg id="usage-chart""#), "{g}");
        assert!(html.contains(caption), "{g}: {html}");
        assert!(
            html.contains("valid: 7") && html.contains("rate_limited: 2"),
            "{g}"
        );
        assert!(
            html.contains(&format!(
                r#"aria-current="true"><strong>{current}</strong>"#
            )),
            "{g}"
        );
        for other in ["minute", "hour", "day"] {
            assert!(
                html.contains(&format!(
                    r##"href="{key_path}?granularity={other}#usage-h""##
                )),
                "{g}: link to {other}"
            );
        }
        assert!(html.contains("<rect "), "{g}: bars drawn");
        assert!(!html.contains("<script>"), "no inline script");
    }
    let html = page(
        &client,
        &app.base,
        &cookie,
        &format!("/console/keys/{}", unused.view.id),
    )
    .await;
    assert!(html.contains(r#"<dd id="last-used">never</dd>"#), "{html}");
    assert!(html.contains("No requests in the last 24 hours."));

    // The project page: the sum over its keys, links that keep the filters, last use per key.
    let html = page(
        &client,
        &app.base,
        &cookie,
        &format!(
            "/console/projects/{}?status=active&granularity=day",
            project.id
        ),
    )
    .await;
    assert!(html.contains(r#"<svg id="project-usage-chart""#), "{html}");
    assert!(html.contains("Per day, last 30 days: "));
    assert!(html.contains("valid: 7"));
    assert!(html.contains(&format!(
        r##"href="/console/projects/{}?status=active&amp;granularity=minute#project-usage-h""##,
        project.id
    )));
    assert!(html.contains(&stamp), "last used in the key list");
    assert!(html.contains("<td>never</td>"), "the unused key");
}

/// The hidden CSRF field's value in a console page.
fn csrf_in(html: &str) -> String {
    html.split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field in the page")
        .to_owned()
}

/// The confirmation box is required by the server, not only by the browser: a revoke posted
/// without it, or with another value, is refused and the key stays active.
#[actix_web::test]
async fn revoking_a_key_in_the_console_needs_the_confirmation() {
    use keygate_control_plane::domain::{keys, projects};
    let app = start().await;
    let (key_id, now) = {
        let mut conn = app.state.pool.get().expect("connection");
        let now = app.state.clock.now_ms();
        let p = projects::create(
            &mut conn,
            now,
            "system",
            serde_json::from_value(json!({"name": "Shop", "key_prefix": "shop"})).expect("spec"),
        )
        .expect("project");
        let k = keys::create(
            &mut conn,
            now,
            "system",
            &p.id,
            serde_json::from_value(
                json!({"name": "server", "kind": "secret", "environment": "live"}),
            )
            .expect("spec"),
        )
        .expect("key");
        (k.view.id, now)
    };
    let status = |app: &TestApp| {
        let mut conn = app.state.pool.get().expect("connection");
        let view = keys::get(&mut conn, now, &key_id).expect("key");
        serde_json::to_value(view.status).expect("status")
    };
    let client = http_client();
    let cookie = session_cookie(&client, &app.base).await;
    let key_path = format!("/console/keys/{key_id}");
    let csrf = csrf_in(&page(&client, &app.base, &cookie, &key_path).await);
    let revoke = |fields: Vec<(&'static str, String)>| {
        let (client, cookie) = (&client, &cookie);
        let url = format!("{}{key_path}/revoke", app.base);
        async move {
            let mut resp = client
                .post(url)
                .insert_header(("cookie", cookie.as_str()))
                .send_form(&fields)
                .await
                .expect("post revoke");
            let body = resp.body().await.expect("body");
            (
                resp.status(),
                header(&resp, "location"),
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };

    for confirm in [None, Some("on"), Some("no")] {
        let mut fields = vec![
            ("csrf_token", csrf.clone()),
            ("reason", "unconfirmed".to_owned()),
        ];
        if let Some(v) = confirm {
            fields.push(("confirm", v.to_owned()));
        }
        let (code, _, body) = revoke(fields).await;
        assert_eq!(code, 422, "confirm={confirm:?} must be refused");
        assert!(
            body.contains("Tick the confirmation to revoke the key."),
            "confirm={confirm:?}: {body}"
        );
        assert_eq!(status(&app), json!("active"), "confirm={confirm:?}");
    }

    // The same form with the box ticked revokes the key.
    let (code, location, _) = revoke(vec![
        ("csrf_token", csrf.clone()),
        ("reason", "confirmed".to_owned()),
        ("confirm", "yes".to_owned()),
    ])
    .await;
    assert_eq!(code, 303);
    assert_eq!(location, format!("{key_path}?revoked=1"));
    assert_eq!(status(&app), json!("revoked"));
}

// ---------------------------------------------------------------------------------------
// The browser test.

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
                "--window-size=1280,1000",
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

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.expect(css);
    e.clear().await.expect("clear");
    e.send_keys(text).await.expect("type");
}

async fn click(c: &Client, css: &str) {
    let before = c.find(Locator::Css("html")).await.expect("html");
    c.find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect("click");
    // If the click navigates, wait until the old document is gone and the new one is loaded.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        if before.tag_name().await.is_err() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("main"))
        .await;
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .expect(css)
        .text()
        .await
        .expect("text")
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.expect(css).len()
}

async fn login(c: &Client, base: &str, email: &str) {
    c.goto(&format!("{base}/console/login"))
        .await
        .expect("goto");
    fill(c, "#email", email).await;
    fill(c, "#password", PASSWORD).await;
    click(c, "form button[type=submit]").await;
    assert!(c
        .current_url()
        .await
        .expect("url")
        .path()
        .starts_with("/console/projects"));
}

/// POSTs a form from the page with fetch, as a forged request would; returns the status.
async fn post_from_page(c: &Client, path: &str, fields: Value) -> u64 {
    let script = "const [path, fields] = arguments; \
        return fetch(path, {method: 'POST', body: new URLSearchParams(fields), redirect: 'manual'}) \
        .then(r => r.status);";
    c.execute(script, vec![json!(path), fields])
        .await
        .expect("fetch")
        .as_u64()
        .expect("status")
}

async fn audit_actions(c: &Client, base: &str, target: &str) -> Vec<(String, String)> {
    c.goto(&format!("{base}/console/audit?target_id={target}"))
        .await
        .expect("audit");
    let rows = c
        .find_all(Locator::Css("#audit tbody tr"))
        .await
        .expect("rows");
    let mut out = Vec::new();
    for r in rows {
        let cells = r.find_all(Locator::Css("td")).await.expect("cells");
        out.push((
            cells[1].text().await.expect("actor"),
            cells[2].text().await.expect("action"),
        ));
    }
    out
}

#[actix_web::test]
#[ignore = "needs /usr/bin/chromium and /usr/bin/chromedriver; `cargo xtask test` runs it"]
async fn console_in_a_browser() {
    require_browser();
    let app = start().await;
    let base = app.base.clone();
    let driver = start_chromedriver();
    let profile = tempfile::tempdir().expect("profile dir");
    let c = browser(&driver, profile.path()).await;

    // Log in.
    c.goto(&format!("{base}/console/login"))
        .await
        .expect("goto");
    for field in ["#email", "#password", "form button[type=submit]"] {
        assert_eq!(count(&c, field).await, 1, "{field} on the login page");
    }
    shot(&c, "01-login").await;
    login(&c, &base, OWNER_EMAIL).await;

    // A CSRF-less post from a logged-in admin is refused.
    let status = post_from_page(
        &c,
        "/console/projects",
        json!({"name": "x", "key_prefix": "xx"}),
    )
    .await;
    assert_eq!(status, 403, "a post without a CSRF token must be refused");
    let status = post_from_page(
        &c,
        "/console/projects",
        json!({"name": "x", "key_prefix": "xx", "csrf_token": "0".repeat(64)}),
    )
    .await;
    assert_eq!(
        status, 403,
        "a post with a wrong CSRF token must be refused"
    );

    // Create a project; a bad prefix first shows an inline message.
    fill(&c, "#name", "Acme shop").await;
    fill(&c, "#key_prefix", "9bad").await;
    fill(&c, "#routes", "GET,HEAD /orders/* orders:read").await;
    click(&c, "#project-form button[type=submit]").await;
    assert!(text(&c, "#key_prefix-error").await.contains("key_prefix"));
    fill(&c, "#key_prefix", "acme").await;
    click(&c, "#project-form button[type=submit]").await;
    let project_url = c.current_url().await.expect("url");
    assert!(
        project_url.path().starts_with("/console/projects/prj_"),
        "{project_url}: {}",
        c.source().await.expect("source")
    );
    let project_id = project_url
        .path()
        .trim_start_matches("/console/projects/")
        .to_owned();
    assert!(c
        .source()
        .await
        .expect("source")
        .contains("GET,HEAD /orders/* orders:read"));
    shot(&c, "02-project").await;

    // Edit the project: a malformed route line is refused inline and keeps what was typed;
    // a good edit saves name, routes and default policy.
    let two_routes = "GET,HEAD /orders/* orders:read\nPOST /orders/* orders:write";
    fill(
        &c,
        "#project-edit #routes",
        "GET,HEAD /orders/* orders:read\nPOST /orders/*",
    )
    .await;
    click(&c, "#project-edit button[type=submit]").await;
    assert!(text(&c, "#routes-error").await.contains("line 2"));
    assert!(c.source().await.expect("source").contains("POST /orders/*"));
    fill(&c, "#project-edit #name", "Acme store").await;
    fill(&c, "#project-edit #routes", two_routes).await;
    c.find(Locator::Css("#project-edit #default_route_policy"))
        .await
        .expect("policy select")
        .select_by_value("deny")
        .await
        .expect("select deny");
    click(&c, "#project-edit button[type=submit]").await;
    let saved = c.current_url().await.expect("url");
    assert_eq!(saved.query(), Some("saved=1"), "{saved}");
    assert!(c.source().await.expect("source").contains("Project saved."));
    {
        let mut conn = app.state.pool.get().expect("connection");
        let p = keygate_control_plane::domain::projects::get(
            &mut conn,
            &keygate_control_plane::ids::ProjectId::new(project_id.as_str()),
        )
        .expect("get");
        assert_eq!(p.name, "Acme store");
        assert_eq!(p.routes.len(), 2);
        assert_eq!(
            serde_json::to_value(p.default_route_policy).expect("policy"),
            json!("deny")
        );
    }
    assert!(audit_actions(&c, &base, &project_id)
        .await
        .iter()
        .any(|(actor, a)| a == "project.update" && *actor == app.owner_id));
    c.goto(&format!("{base}/console/projects"))
        .await
        .expect("goto");
    let listed = text(&c, &format!("a[href=\"/console/projects/{project_id}\"]")).await;
    assert_eq!(listed, "Acme store", "the project, renamed, in the list");
    shot(&c, "03-projects").await;

    // A publishable key without referrers is refused inline; with them it is created.
    c.goto(&format!("{base}/console/projects/{project_id}/keys/new"))
        .await
        .expect("goto");
    fill(&c, "#name", "Checkout web app").await;
    c.find(Locator::Css("#kind"))
        .await
        .expect("kind")
        .select_by_value("publishable")
        .await
        .expect("select");
    fill(&c, "#scopes", "orders:read").await;
    fill(&c, "#rate_limit", "100").await;
    fill(&c, "#rate_limit_period_seconds", "60").await;
    fill(&c, "#metadata", r#"{"customer": "cus_123"}"#).await;
    click(&c, "#key-form button[type=submit]").await;
    let err = text(&c, "#referrers-error").await;
    assert!(err.contains("referrer"), "{err}");
    shot(&c, "04-new-key-errors").await;
    fill(&c, "#referrers", "https://shop.example.com/*").await;
    click(&c, "#key-form button[type=submit]").await;
    let warning = text(&c, ".warning").await;
    assert!(warning.contains("shown only once"), "{warning}");
    let plaintext = c
        .find(Locator::Css("#plaintext"))
        .await
        .expect("plaintext")
        .prop("value")
        .await
        .expect("value")
        .expect("a value");
    assert!(plaintext.starts_with("acme_pk_live_"), "{plaintext}");
    assert_eq!(count(&c, "#copy").await, 1);
    shot(&c, "05-key-created").await;
    click(&c, "#to-key").await;
    let key_url = c.current_url().await.expect("url");
    let key_id = key_url
        .path()
        .trim_start_matches("/console/keys/")
        .to_owned();
    assert!(key_id.starts_with("key_"), "{key_id}");
    // Shown once: never again.
    assert!(!c.source().await.expect("source").contains(&plaintext));
    let referrers = text(&c, "#referrers-view").await;
    assert!(
        referrers.contains("https://shop.example.com"),
        "{referrers:?}"
    );
    shot(&c, "06-key-detail").await;

    // Find it in the list: by name, by start, and with filters.
    c.goto(&format!("{base}/console/projects/{project_id}?q=checkout"))
        .await
        .expect("goto");
    assert!(text(&c, "#keys").await.contains("Checkout web app"));
    let start = &plaintext[..("acme_pk_live_".len() + 4)];
    c.goto(&format!(
        "{base}/console/projects/{project_id}?q={start}&status=active&environment=live"
    ))
    .await
    .expect("goto");
    assert_eq!(count(&c, "#keys tbody tr").await, 1);
    shot(&c, "07-key-list").await;
    c.goto(&format!(
        "{base}/console/projects/{project_id}?environment=test"
    ))
    .await
    .expect("goto");
    assert_eq!(count(&c, "#no-keys").await, 1);
    c.goto(&format!(
        "{base}/console/projects/{project_id}?q=nothing-like-this"
    ))
    .await
    .expect("goto");
    assert_eq!(count(&c, "#no-keys").await, 1);

    // Edit a restriction: a malformed one is refused inline, then a good one is saved.
    c.goto(&format!("{base}/console/keys/{key_id}"))
        .await
        .expect("goto");
    fill(&c, "#referrers", "https://shop.example.com/*\n*.com").await;
    click(&c, "#key-edit button[type=submit]").await;
    assert!(text(&c, "#referrers-error").await.contains("referrers"));
    fill(
        &c,
        "#referrers",
        "https://shop.example.com/*\n*.example.org",
    )
    .await;
    click(&c, "#key-edit button[type=submit]").await;
    assert!(text(&c, ".notice").await.contains("saved"));
    assert!(text(&c, "#referrers-view").await.contains("*.example.org"));

    // Rotate with a grace period.
    c.find(Locator::Css("#grace_seconds"))
        .await
        .expect("grace")
        .select_by_value("86400")
        .await
        .expect("select");
    click(&c, "#rotate-form button[type=submit]").await;
    let rotated = c
        .find(Locator::Css("#plaintext"))
        .await
        .expect("plaintext")
        .prop("value")
        .await
        .expect("value")
        .expect("a value");
    assert!(rotated.starts_with("acme_pk_live_") && rotated != plaintext);
    assert!(text(&c, "#previous-note")
        .await
        .contains("keeps working until"));
    shot(&c, "08-key-rotated").await;
    click(&c, "#to-key").await;
    let new_key_id = c
        .current_url()
        .await
        .expect("url")
        .path()
        .trim_start_matches("/console/keys/")
        .to_owned();
    assert_ne!(new_key_id, key_id);

    // Revoke with a reason: the confirmation is required, by the server too.
    let csrf = c
        .find(Locator::Css("#revoke-form input[name=csrf_token]"))
        .await
        .expect("csrf")
        .prop("value")
        .await
        .expect("value")
        .expect("a value");
    let status = post_from_page(
        &c,
        &format!("/console/keys/{new_key_id}/revoke"),
        json!({"csrf_token": csrf, "reason": "unconfirmed"}),
    )
    .await;
    assert_eq!(
        status, 422,
        "a revoke without the confirmation must be refused"
    );
    c.goto(&format!("{base}/console/keys/{new_key_id}"))
        .await
        .expect("goto");
    assert_eq!(text(&c, "#key-status").await, "active");
    fill(&c, "#reason", "laptop lost").await;
    click(&c, "#revoke-form button[type=submit]").await;
    // The browser refuses to submit without the required confirmation.
    assert_eq!(text(&c, "#key-status").await, "active");
    click(&c, "#confirm").await;
    click(&c, "#revoke-form button[type=submit]").await;
    assert_eq!(text(&c, "#key-status").await, "revoked");
    assert_eq!(text(&c, "#revoked-reason").await, "laptop lost");
    assert_eq!(count(&c, "#revoke-form").await, 0);
    shot(&c, "09-key-revoked").await;

    // Each change is in the audit log, by this admin.
    let old = audit_actions(&c, &base, &key_id).await;
    let actions: Vec<&str> = old.iter().map(|(_, a)| a.as_str()).collect();
    for a in ["key.create", "key.update", "key.rotate"] {
        assert!(actions.contains(&a), "{a} missing in {actions:?}");
    }
    assert!(
        old.iter().all(|(actor, _)| *actor == app.owner_id),
        "{old:?}"
    );
    let new = audit_actions(&c, &base, &new_key_id).await;
    assert!(
        new.iter()
            .any(|(actor, a)| a == "key.revoke" && *actor == app.owner_id),
        "{new:?}"
    );
    c.goto(&format!("{base}/console/audit?action=project"))
        .await
        .expect("goto");
    assert!(text(&c, "#audit").await.contains("project.create"));
    c.goto(&format!("{base}/console/audit"))
        .await
        .expect("goto");
    let newest = text(&c, "#audit tbody tr td.action").await;
    assert_eq!(newest, "key.revoke", "the newest entry comes first");
    shot(&c, "10-audit").await;

    // Snapshot status and the owner's pages.
    c.goto(&format!("{base}/console/snapshot"))
        .await
        .expect("goto");
    let (version, signing_key) = {
        let mut conn = app.state.pool.get().expect("connection");
        let now = app.state.clock.now_ms();
        let version = keygate_control_plane::domain::current_version(&mut conn).expect("version");
        let keyring = app.state.snapshots.keyring(now);
        (version, keyring.active().key_id().to_owned())
    };
    assert_eq!(text(&c, "#signing-key").await, signing_key);
    assert_eq!(text(&c, "#snapshot-version").await, version.to_string());
    // The public key for the edges: its copy button runs the console's script.
    click(&c, "#copy-public-keys").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//button[@id='copy-public-keys' and normalize-space()='Copied']",
        ))
        .await
        .expect("the copy button says Copied");
    shot(&c, "11-snapshot").await;
    c.goto(&format!("{base}/console/admins"))
        .await
        .expect("goto");
    assert!(text(&c, "#admins").await.contains(VIEWER_EMAIL));
    fill(&c, "#token_name", "ci").await;
    click(&c, "#token-form button[type=submit]").await;
    let token = c
        .find(Locator::Css("#plaintext"))
        .await
        .expect("token")
        .prop("value")
        .await
        .expect("value")
        .expect("a value");
    assert!(token.starts_with("kgt_"), "{token}");
    shot(&c, "12-admins").await;

    // Narrow screen.
    c.set_window_size(390, 844).await.expect("resize");
    c.goto(&format!("{base}/console/keys/{key_id}"))
        .await
        .expect("goto");
    // The page fits the width: nothing but the tables' own scrolling area is wider than it.
    let widths = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("widths");
    let (page_width, viewport) = (widths[0].as_u64(), widths[1].as_u64());
    assert!(
        page_width.is_some() && page_width <= viewport && viewport <= Some(420),
        "a narrow screen scrolls sideways: page {page_width:?}, viewport {viewport:?}"
    );
    // The old key, in its grace period: still active, pointing at its successor.
    assert_eq!(text(&c, "#key-status").await, "active");
    assert_eq!(
        count(
            &c,
            &format!("#key-facts a[href=\"/console/keys/{new_key_id}\"]")
        )
        .await,
        1
    );
    assert_eq!(count(&c, "#rotate-form").await, 0, "rotated once already");
    shot(&c, "13-key-detail-narrow").await;
    c.set_window_size(1280, 1000).await.expect("resize");

    // Log out, then in as a viewer: no write controls, and forged writes are refused.
    let before = c
        .get_named_cookie("keygate_session")
        .await
        .expect("session cookie")
        .value()
        .to_owned();
    click(&c, ".who button[type=submit]").await;
    assert_eq!(c.current_url().await.expect("url").path(), "/console/login");
    // The logged-out token is dead, not only dropped by the browser: a copy of it is refused.
    let replay = http_client()
        .get(format!("{base}/console/projects"))
        .insert_header(("cookie", format!("keygate_session={before}")))
        .send()
        .await
        .expect("replay");
    assert_eq!(
        replay.status(),
        303,
        "a logged-out session still opens pages"
    );
    assert_eq!(header(&replay, "location"), "/console/login");
    login(&c, &base, VIEWER_EMAIL).await;
    assert_eq!(count(&c, "#project-form").await, 0);
    c.goto(&format!("{base}/console/projects/{project_id}"))
        .await
        .expect("goto");
    assert_eq!(count(&c, "#project-edit").await, 0);
    assert_eq!(count(&c, "#new-key").await, 0);
    c.goto(&format!("{base}/console/keys/{key_id}"))
        .await
        .expect("goto");
    for form in ["#key-edit", "#rotate-form", "#revoke-form"] {
        assert_eq!(count(&c, form).await, 0, "{form} shown to a viewer");
    }
    // Only the logout form posts anything.
    assert_eq!(count(&c, "form[method=post]").await, 1);
    shot(&c, "14-viewer-key").await;
    let csrf = c
        .find(Locator::Css(".who input[name=csrf_token]"))
        .await
        .expect("csrf")
        .prop("value")
        .await
        .expect("value")
        .expect("a value");
    let status = post_from_page(
        &c,
        &format!("/console/keys/{key_id}/revoke"),
        json!({"csrf_token": csrf, "reason": "forged", "confirm": "yes"}),
    )
    .await;
    assert_eq!(status, 403, "a viewer's forged revoke must be refused");
    let status = post_from_page(
        &c,
        "/console/projects",
        json!({"csrf_token": csrf, "name": "Forged", "key_prefix": "forged"}),
    )
    .await;
    assert_eq!(status, 403, "a viewer's forged project must be refused");
    c.goto(&format!("{base}/console/admins"))
        .await
        .expect("goto");
    assert!(c.source().await.expect("source").contains("only owners"));
    c.goto(&format!("{base}/console/keys/{key_id}"))
        .await
        .expect("goto");
    assert_eq!(text(&c, "#key-status").await, "active");
    c.goto(&format!("{base}/console/projects"))
        .await
        .expect("goto");
    assert!(!c.source().await.expect("source").contains("Forged"));

    c.close().await.expect("close");
}

#[actix_web::test]
#[ignore = "needs /usr/bin/chromium and /usr/bin/chromedriver; `cargo xtask test` runs it"]
async fn alerts_in_a_browser() {
    use keygate_control_plane::domain::{alerts, keys, projects, usage};
    require_browser();
    let app = start().await;
    let base = app.base.clone();
    // A key that someone hammers from where it may not be used.
    let (project_id, key_id) = {
        let mut conn = app.state.pool.get().expect("connection");
        let now = app.state.clock.now_ms();
        let p = projects::create(
            &mut conn,
            now,
            &app.owner_id,
            serde_json::from_value(json!({"name": "Shop", "key_prefix": "shop"})).expect("input"),
        )
        .expect("project");
        let k = keys::create(
            &mut conn,
            now,
            &app.owner_id,
            &p.id,
            serde_json::from_value(
                json!({"name": "backend", "kind": "secret", "environment": "live", "restrictions": {"ips": ["192.0.2.0/24"]}}),
            )
            .expect("spec"),
        )
        .expect("key");
        let minute = keygate_control_plane::timefmt::format_ms(now - now % 60_000);
        usage::record(
            &mut conn,
            serde_json::from_value(json!({"items": [
                {"key_id": k.view.id, "minute": minute, "code": "ip_not_allowed", "count": 25}
            ]}))
            .expect("report"),
        )
        .expect("usage");
        let report = alerts::evaluate(&mut conn, now).expect("evaluate");
        assert_eq!(report.raised.len(), 1, "{report:?}");
        (p.id, k.view.id)
    };
    let driver = start_chromedriver();
    let profile = tempfile::tempdir().expect("profile dir");
    let c = browser(&driver, profile.path()).await;
    login(&c, &base, OWNER_EMAIL).await;

    // The open alert is listed with its explanation, and acknowledged from the list.
    c.goto(&format!("{base}/console/alerts"))
        .await
        .expect("goto");
    assert_eq!(count(&c, "#alerts tbody tr").await, 1);
    let summary = text(&c, "#alerts td.summary").await;
    assert!(summary.contains("25 requests refused"), "{summary}");
    assert!(summary.contains("25 ip_not_allowed"), "{summary}");
    shot(&c, "20-alerts-open").await;
    click(&c, "#alerts form button[type=submit]").await;
    assert_eq!(
        c.current_url().await.expect("url").path(),
        "/console/alerts"
    );
    assert_eq!(count(&c, "#no-alerts").await, 1, "no open alert is left");
    c.goto(&format!("{base}/console/alerts?status=all&key_id={key_id}"))
        .await
        .expect("goto");
    let row = text(&c, "#alerts tbody tr").await;
    assert!(row.contains("acknowledged by"), "{row}");
    assert!(row.contains(&app.owner_id), "{row}");
    shot(&c, "21-alerts-acknowledged").await;

    // The key's page links to its alerts; the project's to its rules.
    c.goto(&format!("{base}/console/keys/{key_id}"))
        .await
        .expect("goto");
    click(&c, "#key-alerts").await;
    assert_eq!(count(&c, "#alerts tbody tr").await, 1);
    c.goto(&format!("{base}/console/projects/{project_id}"))
        .await
        .expect("goto");
    click(&c, "#alert-rules").await;
    assert_eq!(count(&c, "section.rule").await, 7);

    // A bad threshold is refused next to its field; a good one is saved with revocation on.
    fill(&c, "#new_ips-threshold", "0").await;
    click(&c, "#rule-new_ips button[type=submit]").await;
    let err = text(&c, "#new_ips-threshold-error").await;
    assert!(err.contains("threshold"), "{err}");
    assert_eq!(
        c.find(Locator::Css("#new_ips-threshold"))
            .await
            .expect("field")
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("0"),
        "the refused value is kept for correction"
    );
    shot(&c, "22-alert-rule-error").await;
    fill(&c, "#new_ips-threshold", "4").await;
    let revoke = c
        .find(Locator::Css("#rule-new_ips input[name=auto_revoke]"))
        .await
        .expect("auto_revoke");
    revoke.click().await.expect("check");
    click(&c, "#rule-new_ips button[type=submit]").await;
    assert_eq!(
        c.current_url().await.expect("url").path(),
        format!("/console/projects/{project_id}/alert-rules")
    );
    assert_eq!(count(&c, "#new_ips-threshold-error").await, 0);
    let saved = c
        .find(Locator::Css("#new_ips-threshold"))
        .await
        .expect("field")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(saved.as_deref(), Some("4"), "the saved threshold is shown");
    let checked = c
        .find(Locator::Css("#rule-new_ips input[name=auto_revoke]"))
        .await
        .expect("auto_revoke")
        .prop("checked")
        .await
        .expect("checked");
    assert_eq!(checked.as_deref(), Some("true"), "revocation shown as on");
    shot(&c, "23-alert-rules").await;
    let rules = {
        let mut conn = app.state.pool.get().expect("connection");
        alerts::list_rules(&mut conn, &project_id).expect("rules")
    };
    let new_ips = rules
        .items
        .iter()
        .find(|r| r.rule == alerts::Rule::NewIps)
        .expect("new_ips");
    assert_eq!(new_ips.threshold, 4);
    assert!(new_ips.auto_revoke);
    assert!(new_ips.enabled);
    // near_quota cannot revoke keys, so it offers no such box.
    assert_eq!(
        count(&c, "#rule-near_quota input[name=auto_revoke]").await,
        0
    );
    let actions = audit_actions(&c, &base, &project_id).await;
    assert!(
        actions
            .iter()
            .any(|(actor, action)| actor == &app.owner_id && action == "alert_rule.update"),
        "{actions:?}"
    );

    // A viewer sees alerts and rules but no controls.
    click(&c, ".who button[type=submit]").await;
    login(&c, &base, VIEWER_EMAIL).await;
    c.goto(&format!("{base}/console/alerts?status=all"))
        .await
        .expect("goto");
    assert_eq!(count(&c, "#alerts tbody tr").await, 1);
    c.goto(&format!("{base}/console/projects/{project_id}/alert-rules"))
        .await
        .expect("goto");
    assert_eq!(count(&c, "section.rule").await, 7);
    assert_eq!(count(&c, "form[method=post]").await, 1, "only logout posts");
    c.close().await.expect("close");
}
