//! Key listing and search at a million keys, over HTTP: the API's list (first page, a page deep
//! in), its search by name prefix and by start, and the console's project page.
//!
//! ```text
//! cargo bench -p keygate-control-plane --bench listing
//! ```
//!
//! SQLite in a temporary directory, and PostgreSQL too when `KEYGATE_TEST_POSTGRES_URL` is set
//! (a fresh database is created and dropped). `KEYGATE_BENCH_KEYS` (default 1000000) keys are
//! bulk-inserted into one project; key `i` is named `<word>-<i, 7 digits>` with the word one of
//! eight in turn, so `checkout` matches an eighth of the keys and `checkout-0012` 125.
//! Each figure is the median and the maximum of `KEYGATE_BENCH_RUNS` (default 20) sequential
//! requests, after one unmeasured warm-up request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use diesel::connection::SimpleConnection;
use keygate_control_plane::{Application, Config};
use serde_json::{json, Value};

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/seed.rs"]
mod seed;

const TOKEN: &str = "bench-owner-token-0123456789abcdefghijklmnop";
const PASSWORD: &str = "correct horse battery";
const WORDS: [&str; 8] = [
    "checkout", "billing", "search", "mobile", "partner", "backend", "reports", "webhooks",
];

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and seeding a million keys does not belong in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "listing benchmark: run it with `cargo bench -p keygate-control-plane --bench listing`"
        );
        return;
    }
    keygate_control_plane::telemetry::init(true, std::io::sink);
    let keys: usize = env_or("KEYGATE_BENCH_KEYS", 1_000_000);
    let runs: usize = env_or("KEYGATE_BENCH_RUNS", 20);
    actix_web::rt::System::new().block_on(async move {
        run("SQLite", None, keys, runs).await;
        postgres::with_database("listing", |url| run("PostgreSQL", Some(url), keys, runs)).await;
    });
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Key `i`: an id in creation order that is a valid cursor, and a name.
fn id_and_name(i: usize) -> (String, String) {
    (
        format!("key_{i:026}"),
        format!("{}-{i:07}", WORDS[i % WORDS.len()]),
    )
}

struct Client {
    base: String,
    http: awc::Client,
    session: String,
}

impl Client {
    /// GETs `path` with the owner token and the console session; the status, the body and the
    /// time taken in milliseconds.
    async fn get(&self, path: &str) -> (u16, Vec<u8>, f64) {
        let t = Instant::now();
        let mut r = self
            .http
            .get(format!("{}{path}", self.base))
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .insert_header(("cookie", format!("keygate_session={}", self.session)))
            .send()
            .await
            .unwrap();
        let body = r.body().limit(64 << 20).await.unwrap().to_vec();
        (
            r.status().as_u16(),
            body,
            t.elapsed().as_secs_f64() * 1000.0,
        )
    }

    async fn json(&self, path: &str) -> Value {
        let (status, body, _) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Times `runs` requests after one warm-up; "median X ms, max Y ms" and what the page held.
    async fn time(&self, path: &str, runs: usize, what: impl Fn(&[u8]) -> String) -> String {
        let (status, body, _) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        let held = what(&body);
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let (status, _, t) = self.get(path).await;
            assert_eq!(status, 200, "{path}");
            ms.push(t);
        }
        ms.sort_by(f64::total_cmp);
        format!(
            "median {:.1} ms, max {:.1} ms ({held})",
            ms[ms.len() / 2],
            ms[ms.len() - 1]
        )
    }
}

fn items(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    let n = v["items"].as_array().map_or(0, Vec::len);
    let more = if v["next_cursor"].is_string() {
        ", more"
    } else {
        ""
    };
    format!("{n} keys{more}")
}

fn rows(body: &[u8]) -> String {
    let html = String::from_utf8_lossy(body);
    let n = html.matches("href=\"/console/keys/").count();
    let more = if html.contains("id=\"older-keys\"") {
        ", older link"
    } else {
        ""
    };
    format!("{n} rows{more}, {} KiB", body.len() / 1024)
}

async fn run(label: &str, database_url: Option<String>, keys: usize, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.bootstrap_token = Some(TOKEN.to_owned());
    config.database_url = database_url;
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    let http = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .finish();
    let post = |path: &str, body: Value| {
        let req = http
            .post(format!("{base}{path}"))
            .insert_header(("authorization", format!("Bearer {TOKEN}")));
        async move {
            let mut r = req.send_json(&body).await.unwrap();
            let v = r.json::<Value>().limit(1 << 20).await.unwrap();
            assert!(r.status().is_success(), "{v}");
            v
        }
    };
    let project = post(
        "/v1/projects",
        json!({"name": "bench", "key_prefix": "bench", "routes": []}),
    )
    .await;
    let pid = project["id"].as_str().unwrap().to_owned();
    post(
        "/v1/admins",
        json!({"email": "viewer@example.com", "role": "viewer", "password": PASSWORD}),
    )
    .await;
    let login = post(
        "/v1/auth/login",
        json!({"email": "viewer@example.com", "password": PASSWORD}),
    )
    .await;
    let client = Client {
        base: base.clone(),
        http: http.clone(),
        session: login["token"].as_str().unwrap().to_owned(),
    };

    println!("## {label}, {keys} keys in one project");
    let started = Instant::now();
    {
        let mut conn = state.pool.get().unwrap();
        let now = state.clock.now_ms();
        seed::seed(&mut conn, &pid, keys, now, id_and_name);
        if database_url_is_pg(&conn) {
            // As autovacuum would after a bulk load: the planner needs the statistics of the
            // expression index to choose between it and the (project_id, id) index.
            conn.batch_execute("ANALYZE api_keys").unwrap();
        }
    }
    println!("seeded in {:.1} s", started.elapsed().as_secs_f64());

    let list = format!("/v1/projects/{pid}/keys");
    println!(
        "list, first page of 50: {}",
        client.time(&list, runs, items).await
    );
    println!(
        "list, first page of 200: {}",
        client.time(&format!("{list}?limit=200"), runs, items).await
    );
    // A page deep in: follow 50 cursors of 200 keys (10,000 keys back), then time that page.
    let mut cursor = String::new();
    let t = Instant::now();
    for _ in 0..50 {
        let v = client
            .json(&format!("{list}?limit=200&cursor={cursor}"))
            .await;
        cursor = v["next_cursor"].as_str().unwrap().to_owned();
    }
    println!(
        "following 50 cursors of 200 keys: {:.0} ms in all",
        t.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "list, page of 50 after 10,000 keys (cursor followed): {}",
        client
            .time(&format!("{list}?cursor={cursor}"), runs, items)
            .await
    );
    let middle = id_and_name(keys / 2).0;
    println!(
        "list, page of 50 halfway (cursor at key {}): {}",
        keys / 2,
        client
            .time(&format!("{list}?cursor={middle}"), runs, items)
            .await
    );

    // Search. Key `keys / 2 + 1` is the one to find by its whole name and by its start.
    let target = keys / 2 + 1;
    let (_, name) = id_and_name(target);
    let found = client.json(&format!("{list}?name_prefix={name}")).await;
    let start = found["items"][0]["start"].as_str().unwrap().to_owned();
    // Keys 12000 to 12999 have names `<word>-0012...`; an eighth of them are `checkout-`.
    let medium = format!("{}-0012", WORDS[0]);
    for (what, query) in [
        (
            "name_prefix, one key's whole name",
            format!("name_prefix={name}"),
        ),
        (
            "name_prefix, upper case",
            format!("name_prefix={}", name.to_ascii_uppercase()),
        ),
        (
            "name_prefix matching ~125 keys",
            format!("name_prefix={medium}"),
        ),
        ("start, one key's whole start", format!("start={start}")),
        (
            "start matching ~1/62 of the keys",
            format!("start={}", &start[..start.len() - 3]),
        ),
        (
            "name_prefix matching 1/8 of the keys",
            "name_prefix=checkout".to_owned(),
        ),
    ] {
        println!(
            "search, {what}: {}",
            client.time(&format!("{list}?{query}"), runs, items).await
        );
    }
    // Paging through search results: the second page of a broad search.
    let v = client
        .json(&format!("{list}?name_prefix={medium}&limit=50"))
        .await;
    let next = v["next_cursor"].as_str().expect("more than 50 matches");
    println!(
        "search, second page of name_prefix matching ~125 keys: {}",
        client
            .time(
                &format!("{list}?name_prefix={medium}&limit=50&cursor={next}"),
                runs,
                items
            )
            .await
    );

    // The console page also draws the project's hourly usage chart; its query alone.
    println!(
        "project usage, hourly over 24 h (the console chart's query): {}",
        client
            .time(
                &format!("/v1/projects/{pid}/usage?granularity=hour"),
                runs,
                |b| format!("{} KiB", b.len() / 1024)
            )
            .await
    );
    let page = format!("/console/projects/{pid}");
    println!(
        "console project page: {}",
        client.time(&page, runs, rows).await
    );
    let (_, body, _) = client.get(&page).await;
    let html = String::from_utf8_lossy(&body);
    let at = html.find("id=\"older-keys\"").unwrap();
    let tag = &html[html[..at].rfind('<').unwrap()..];
    let href = &tag[tag.find("href=\"").unwrap() + 6..];
    let href = href[..href.find('"').unwrap()]
        .replace("&amp;", "&")
        .split('#')
        .next()
        .unwrap()
        .to_owned();
    println!(
        "console project page, second page (older link): {}",
        client.time(&href, runs, rows).await
    );
    for (what, q) in [
        ("q = one key's whole name", name.clone()),
        ("q = a name prefix matching ~125 keys", medium.clone()),
        ("q = one key's start", start.clone()),
    ] {
        println!(
            "console project page, {what}: {}",
            client.time(&format!("{page}?q={q}"), runs, rows).await
        );
    }
    handle.stop(true).await;
}

fn database_url_is_pg(conn: &keygate_control_plane::db::DbConn) -> bool {
    matches!(conn, keygate_control_plane::db::DbConn::Postgresql(_))
}
