//! Console pages added for everyday checks, over HTTP: "Try a key", the public key for the
//! edges, webhook edit and secret rotation, and a key's sightings.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{spawn_with, Backend, TestApp, OWNER_TOKEN};

both_backends!(
    try_a_key_decides_as_verify_does,
    snapshot_page_shows_the_edge_public_key,
    key_page_shows_sightings,
    project_page_pages_and_searches_on_the_server,
    console_posts_are_checked_in_order
);

mod webhook_edit_and_secret_rotation {
    use crate::helpers::Backend;
    #[actix_web::test]
    async fn sqlite() {
        super::webhook_edit_and_secret_rotation(super::hooks_app(Backend::Sqlite).await).await;
    }
    #[actix_web::test]
    #[ignore = "needs PostgreSQL at KEYGATE_TEST_POSTGRES_URL; `cargo xtask test` runs it"]
    async fn postgres() {
        super::webhook_edit_and_secret_rotation(super::hooks_app(Backend::Postgres).await).await;
    }
}

/// A control plane whose webhooks may target 127.0.0.1 (where nothing listens here) and whose
/// delivery worker does not run during the test.
async fn hooks_app(backend: Backend) -> TestApp {
    spawn_with(backend, |c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.poll_interval = std::time::Duration::from_secs(3600);
    })
    .await
}

const PASSWORD: &str = "correct horse battery";

/// A console session: the cookie's token and the form's CSRF token.
struct Console<'a> {
    app: &'a TestApp,
    token: String,
    client: awc::Client,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl<'a> Console<'a> {
    /// Makes an admin with `role` and logs them in.
    async fn login(app: &'a TestApp, email: &str, role: &str) -> Console<'a> {
        let r = app
            .post(
                "/v1/admins",
                OWNER_TOKEN,
                json!({"email": email, "role": role, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let r = app
            .request(
                actix_web::http::Method::POST,
                "/v1/auth/login",
                None,
                Some(&json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        Console {
            app,
            token: r.body["token"].as_str().unwrap().to_owned(),
            client: awc::Client::builder()
                .disable_redirects()
                .timeout(std::time::Duration::from_secs(60))
                .finish(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(actix_web::http::Method::GET, path, None).await
    }

    /// Posts a form with this session's CSRF token (fields may repeat).
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = keygate_control_plane::console::session::csrf_token(&self.token);
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf_token", &csrf));
        self.send(actix_web::http::Method::POST, path, Some(&fields))
            .await
    }

    async fn send(
        &self,
        method: actix_web::http::Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let req = self
            .client
            .request(method, format!("{}{path}", self.app.base))
            .insert_header(("cookie", format!("keygate_session={}", self.token)));
        let mut r = match form {
            Some(f) => req.send_form(&f).await,
            None => req.send().await,
        }
        .unwrap();
        let body = String::from_utf8_lossy(&r.body().limit(8 << 20).await.unwrap()).into_owned();
        Page {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            body,
        }
    }
}

/// The text of the element with `id` (up to its first `<`), or "" when absent.
fn text_of(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let Some(at) = html.find(&marker) else {
        return String::new();
    };
    let rest = &html[at..];
    let start = rest.find('>').map_or(rest.len(), |i| i + 1);
    let rest = &rest[start..];
    rest[..rest.find('<').unwrap_or(rest.len())].to_owned()
}

/// The `value` attribute of the input with `id`.
fn value_of(html: &str, id: &str) -> String {
    raw_attr_of(html, id, "value")
}

async fn try_a_key_decides_as_verify_does(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    // Reads orders, from one site only.
    let k = app
        .create_key(
            pid,
            json!({"name": "web", "kind": "publishable", "scopes": ["orders:read"],
                   "restrictions": {"referrers": ["https://shop.example.com"]}}),
        )
        .await;
    let key = k["key"].as_str().unwrap().to_owned();
    let kid = k["id"].as_str().unwrap().to_owned();
    let viewer = Console::login(&app, "viewer@example.com", "viewer").await;

    let page = viewer.get("/console/try").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("href=\"/console/try\""), "nav link");
    assert!(page.body.contains("id=\"try-form\""), "{}", page.body);

    // Each case against what `POST /v1/verify` answers for the same request.
    let cases: [(&str, &[(&str, &str)]); 4] = [
        (
            "allowed",
            &[
                ("method", "GET"),
                ("path", "/orders/42"),
                ("referrer", "https://shop.example.com/cart"),
                ("ip", "203.0.113.7"),
            ],
        ),
        (
            "wrong origin",
            &[
                ("method", "GET"),
                ("path", "/orders/42"),
                ("referrer", "https://evil.example.net/"),
            ],
        ),
        (
            "missing scope",
            &[
                ("method", "POST"),
                ("path", "/orders/42"),
                ("referrer", "https://shop.example.com/"),
            ],
        ),
        ("no facts", &[]),
    ];
    let mut codes = Vec::new();
    for (what, facts) in cases {
        let mut body = serde_json::Map::new();
        body.insert("key".into(), json!(key));
        for (n, v) in facts {
            body.insert((*n).into(), json!(v));
        }
        let expected = app.verify(Value::Object(body)).await.body;
        let mut form = vec![("key", key.as_str())];
        form.extend_from_slice(facts);
        let page = viewer.post("/console/try", &form).await;
        assert_eq!(page.status, 200, "{what}: {}", page.body);
        assert_eq!(
            text_of(&page.body, "verdict-code"),
            expected["code"].as_str().unwrap(),
            "{what}"
        );
        let shown = text_of(&page.body, "verdict-result");
        let badge = if expected["valid"] == true {
            "allowed"
        } else {
            "refused"
        };
        assert!(page.body.contains(&format!(">{badge}<")), "{what}: {shown}");
        assert!(
            page.body.contains(&format!("href=\"/console/keys/{kid}\"")),
            "{what}"
        );
        // The key is never written back, not even into the form.
        assert!(!page.body.contains(&key), "{what}");
        assert!(!page.body.contains(&key[..20]), "{what}");
        // The facts are kept in the form for the next try.
        for (n, v) in facts {
            assert_eq!(value_of(&page.body, n), *v, "{what}: {n}");
        }
        codes.push(expected["code"].as_str().unwrap().to_owned());
    }
    // The cases do differ: the page is not showing one fixed answer.
    assert_eq!(codes[0], "valid");
    assert_ne!(codes[1], "valid");
    assert_ne!(codes[2], "valid");
    assert_ne!(codes[1], codes[2]);

    // A revoked key, as the edge would refuse it.
    app.post(&format!("/v1/keys/{kid}/revoke"), OWNER_TOKEN, json!({}))
        .await;
    let page = viewer
        .post(
            "/console/try",
            &[("key", &key), ("referrer", "https://shop.example.com/")],
        )
        .await;
    assert_eq!(text_of(&page.body, "verdict-code"), "revoked_key");
    assert!(!page.body.contains(&key));

    // A request the API refuses shows the API's message next to the field, and no verdict.
    let page = viewer
        .post("/console/try", &[("key", &key), ("ip", "not an ip")])
        .await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("id=\"ip-error\""), "{}", page.body);
    assert!(!page.body.contains("id=\"verdict\""));
    assert!(!page.body.contains(&key));

    // A post without the CSRF token is refused.
    let mut r = viewer
        .client
        .post(format!("{}/console/try", app.base))
        .insert_header(("cookie", format!("keygate_session={}", viewer.token)))
        .send_form(&[("key", key.as_str())])
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let _ = r.body().await;

    // Nothing logged the key.
    assert!(!crate::helpers::logs().contains(&key));
}

async fn snapshot_page_shows_the_edge_public_key(app: TestApp) {
    let viewer = Console::login(&app, "viewer@example.com", "viewer").await;
    let pk = app.get("/v1/snapshot/public-key", OWNER_TOKEN).await;
    assert_eq!(pk.status, 200);
    let public_key = pk.body["public_key"].as_str().unwrap();
    let page = viewer.get("/console/snapshot").await;
    assert_eq!(page.status, 200);
    // The value to paste, the command to paste it into, and a copy button for each.
    assert_eq!(value_of(&page.body, "public-keys"), public_key);
    assert_eq!(
        value_of(&page.body, "wrangler-command"),
        "npx wrangler@4.86.0 secret put SNAPSHOT_PUBLIC_KEYS"
    );
    assert!(page.body.contains("data-copy=\"public-keys\""));
    assert!(page.body.contains("data-copy=\"wrangler-command\""));
    // The name the edge reads its trusted keys from.
    let edge_config = include_str!("../../../edge/src/config.rs");
    assert!(edge_config.contains("required(\"SNAPSHOT_PUBLIC_KEYS\")"));
    assert!(page.body.contains(pk.body["key_id"].as_str().unwrap()));
    assert!(!page.body.contains("retiring until"));

    // During a signing-key rotation the value lists the new key and the retiring one, so that
    // edges given it accept snapshots signed by either.
    let now = app.clock.now_ms();
    let rotated =
        keygate_control_plane::keyring::Keyring::rotate(app.data_dir.path(), now, 86_400_000)
            .unwrap();
    let new_key = rotated.active().public_key_base64url();
    // Past the interval at which a running control plane looks for a new signing key.
    app.clock.advance_ms(10_000);
    let page = viewer.get("/console/snapshot").await;
    assert_eq!(
        value_of(&page.body, "public-keys"),
        format!("{new_key},{public_key}")
    );
    assert!(page.body.contains("retiring until"), "{}", page.body);
}

async fn webhook_edit_and_secret_rotation(app: TestApp) {
    let url = "http://127.0.0.1:9/in";
    let created = app
        .post(
            "/v1/webhooks",
            OWNER_TOKEN,
            json!({"url": url, "events": ["key.revoked"], "description": "Pager"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let wid = created.body["id"].as_str().unwrap().to_owned();
    let first_secret = created.body["secret"].as_str().unwrap().to_owned();
    let admin = Console::login(&app, "ops@example.com", "admin").await;
    let viewer = Console::login(&app, "viewer@example.com", "viewer").await;
    let path = format!("/console/webhooks/{wid}");

    // The edit form holds the endpoint's values.
    let page = admin.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"webhook-edit\""), "{}", page.body);
    assert_eq!(value_of(&page.body, "url"), url);
    assert_eq!(value_of(&page.body, "description"), "Pager");
    assert_eq!(value_of(&page.body, "expiring_days"), "7");
    assert!(page.body.contains("id=\"rotate-secret-form\""));

    // Saved: URL, description, events, days, and disabled (the box left unticked).
    let new_url = "http://127.0.0.1:9/hooks/keygate";
    let page = admin
        .post(
            &path,
            &[
                ("url", new_url),
                ("description", "Ops channel"),
                ("events", "key.created"),
                ("events", "alert.raised"),
                ("expiring_days", "30"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        page.location.as_deref(),
        Some(format!("{path}?done=saved").as_str())
    );
    let w = app
        .get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
        .await
        .body;
    assert_eq!(w["url"], new_url);
    assert_eq!(w["description"], "Ops channel");
    assert_eq!(w["events"], json!(["key.created", "alert.raised"]));
    assert_eq!(w["expiring_days"], 30);
    assert_eq!(w["enabled"], false);
    let audit = app
        .get(&format!("/v1/audit?target_id={wid}"), OWNER_TOKEN)
        .await;
    assert_eq!(audit.body["items"][0]["action"], "webhook.update");
    // Enabled again through the same form.
    let page = admin
        .post(
            &path,
            &[
                ("url", new_url),
                ("events", "key.created"),
                ("enabled", "yes"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let w = app
        .get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
        .await
        .body;
    assert_eq!(
        (w["enabled"].clone(), w["events"].clone()),
        (json!(true), json!(["key.created"]))
    );

    // Refused input: the API's message by the field, what was typed kept, nothing changed.
    let page = admin
        .post(&path, &[("url", "ftp://nope"), ("events", "key.revoked")])
        .await;
    assert_eq!(page.status, 422);
    assert!(
        page.body.contains("url: must be an http or https URL"),
        "{}",
        page.body
    );
    assert_eq!(value_of(&page.body, "url"), "ftp://nope");
    let page = admin.post(&path, &[("url", new_url)]).await;
    assert_eq!(page.status, 422);
    assert!(page.body.contains("id=\"events-error\""), "{}", page.body);
    assert_eq!(
        app.get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
            .await
            .body["url"],
        new_url
    );

    // Rotation: a new secret, shown once; the old one keeps signing for the grace chosen.
    let page = admin
        .post(
            &format!("{path}/rotate-secret"),
            &[("grace_seconds", "3600")],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let secret = value_of(&page.body, "plaintext");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_ne!(secret, first_secret);
    assert!(!page.body.contains(&first_secret));
    let w = app
        .get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
        .await
        .body;
    assert!(secret.starts_with(w["secret_start"].as_str().unwrap()));
    let audit = app
        .get(&format!("/v1/audit?target_id={wid}"), OWNER_TOKEN)
        .await;
    assert_eq!(audit.body["items"][0]["action"], "webhook.rotate_secret");
    assert_eq!(audit.body["items"][0]["details"]["grace_seconds"], 3600);
    // Never shown again.
    let page = admin.get(&path).await;
    assert!(!page.body.contains(&secret));
    // A grace the API refuses.
    let page = admin
        .post(
            &format!("{path}/rotate-secret"),
            &[("grace_seconds", "999999")],
        )
        .await;
    assert_eq!(page.status, 422);
    assert!(
        page.body.contains("id=\"grace_seconds-error\""),
        "{}",
        page.body
    );
    let w2 = app
        .get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
        .await
        .body;
    assert_eq!(w2["secret_start"], w["secret_start"]);

    // A viewer sees neither form, and their posts are refused.
    let page = viewer.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"webhook-edit\""));
    assert!(!page.body.contains("id=\"rotate-secret-form\""));
    assert_eq!(
        viewer
            .post(&path, &[("url", url), ("events", "key.revoked")])
            .await
            .status,
        403
    );
    assert_eq!(
        viewer
            .post(&format!("{path}/rotate-secret"), &[("grace_seconds", "0")])
            .await
            .status,
        403
    );
    let w3 = app
        .get(&format!("/v1/webhooks/{wid}"), OWNER_TOKEN)
        .await
        .body;
    assert_eq!(w3["url"], new_url);
    assert_eq!(w3["secret_start"], w["secret_start"]);

    // An endpoint that does not exist.
    assert_eq!(
        admin
            .post(
                "/console/webhooks/whk_nope",
                &[("url", url), ("events", "key.revoked")]
            )
            .await
            .status,
        404
    );
}

async fn key_page_shows_sightings(app: TestApp) {
    let p = app.create_project("acme").await;
    let k = app.secret_key(p["id"].as_str().unwrap()).await;
    let id = k["id"].as_str().unwrap().to_owned();
    let viewer = Console::login(&app, "viewer@example.com", "viewer").await;
    let path = format!("/console/keys/{id}");

    let page = viewer.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("No origin seen."), "{}", page.body);
    assert!(page.body.contains("No client IP seen."));

    let at = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let t = app.clock.now_ms() - 60_000;
    let sighting = |kind: &str, value: &str, count: u32| {
        json!({"key_id": id, "kind": kind, "value": value, "first_seen": at(t),
               "last_seen": at(t + 30_000), "count": count})
    };
    let r = app
        .post(
            "/v1/usage",
            OWNER_TOKEN,
            json!({"items": [], "sightings": [
                sighting("referrer", "https://shop.example.com", 7),
                sighting("ip", "203.0.113.9", 3),
            ]}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let page = viewer.get(&path).await;
    let table = |tid: &str| {
        let at = page
            .body
            .find(&format!("id=\"{tid}\""))
            .unwrap_or_else(|| panic!("no #{tid} in {}", page.body));
        let rest = &page.body[at..];
        rest[..rest.find("</table>").unwrap()].to_owned()
    };
    let origins = table("sightings-referrer");
    assert!(origins.contains("https://shop.example.com"), "{origins}");
    assert!(origins.contains("<td>7</td>"), "{origins}");
    assert!(!origins.contains("203.0.113.9"));
    let ips = table("sightings-ip");
    assert!(ips.contains("203.0.113.9"), "{ips}");
    assert!(ips.contains("<td>3</td>"), "{ips}");
    assert!(ips.contains(&at(t + 30_000)[..16]), "{ips}");
}

/// The `attr` attribute of the element with `id`, HTML entities for `&` undone.
fn attr_of(html: &str, id: &str, attr: &str) -> String {
    raw_attr_of(html, id, attr).replace("&amp;", "&")
}

/// The `attr` attribute of the element with `id`, as written.
fn raw_attr_of(html: &str, id: &str, attr: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let tag = &html[html[..at].rfind('<').unwrap()..];
    let tag = &tag[..tag.find('>').unwrap()];
    let needle = format!("{attr}=\"");
    let v = tag
        .find(&needle)
        .unwrap_or_else(|| panic!("no {attr} in {tag}"));
    let v = &tag[v + needle.len()..];
    v[..v.find('"').unwrap()].to_owned()
}

/// The rows of the `#keys` table: the key ids they link to.
fn key_rows(html: &str) -> Vec<String> {
    let Some(at) = html.find("id=\"keys\"") else {
        return Vec::new();
    };
    let table = &html[at..];
    let table = &table[..table.find("</table>").unwrap()];
    table
        .split("href=\"/console/keys/")
        .skip(1)
        .map(|r| r[..r.find('"').unwrap()].to_owned())
        .collect()
}

async fn project_page_pages_and_searches_on_the_server(app: TestApp) {
    let p = app.create_project("acme").await;
    let pid = p["id"].as_str().unwrap();
    // The oldest key: beyond the first page of 50.
    let zebra = app
        .create_key(pid, json!({"name": "Zebra legacy", "environment": "test"}))
        .await;
    let zebra_id = zebra["id"].as_str().unwrap().to_owned();
    let mut bulk = Vec::new();
    for i in 0..55 {
        let k = app
            .create_key(pid, json!({"name": format!("bulk {i:02}")}))
            .await;
        bulk.push(k["id"].as_str().unwrap().to_owned());
    }
    bulk.reverse();
    let viewer = Console::login(&app, "viewer@example.com", "viewer").await;
    let path = format!("/console/projects/{pid}");

    // One page of 50, newest first, and a link to the older ones.
    let first = viewer.get(&path).await;
    assert_eq!(first.status, 200);
    assert_eq!(key_rows(&first.body), bulk[..50]);
    assert!(!first.body.contains("id=\"newest-keys\""));
    let older = attr_of(&first.body, "older-keys", "href");
    assert!(older.contains(&format!("cursor={}", bulk[49])), "{older}");
    let older = older.split('#').next().unwrap();
    let second = viewer.get(older).await;
    assert_eq!(second.status, 200);
    let mut rest = bulk[50..].to_vec();
    rest.push(zebra_id.clone());
    assert_eq!(key_rows(&second.body), rest);
    assert!(!second.body.contains("id=\"older-keys\""));
    assert!(second.body.contains("id=\"newest-keys\""));

    // The search runs on the server: the oldest key is found from the first page, by name (any
    // case), by start and by id.
    let page = viewer.get(&format!("{path}?q=zEbRa")).await;
    assert_eq!(key_rows(&page.body), [zebra_id.as_str()]);
    let start = zebra["start"].as_str().unwrap();
    let page = viewer
        .get(&format!("{path}?q={start}&environment=test"))
        .await;
    assert_eq!(key_rows(&page.body), [zebra_id.as_str()]);
    let page = viewer.get(&format!("{path}?q={zebra_id}")).await;
    assert_eq!(key_rows(&page.body), [zebra_id.as_str()]);
    let page = viewer
        .get(&format!("{path}?q={zebra_id}&environment=live"))
        .await;
    assert!(page.body.contains("id=\"no-keys\""), "{}", page.body);

    // Paging keeps the filters.
    let page = viewer.get(&format!("{path}?q=bulk&status=active")).await;
    assert_eq!(key_rows(&page.body), bulk[..50]);
    let older = attr_of(&page.body, "older-keys", "href");
    assert!(
        older.contains("q=bulk") && older.contains("status=active"),
        "{older}"
    );
    let page = viewer.get(older.split('#').next().unwrap()).await;
    assert_eq!(key_rows(&page.body), bulk[50..]);

    // A search the store refuses is shown, not an error page.
    let long = "x".repeat(201);
    let page = viewer.get(&format!("{path}?q={long}")).await;
    assert_eq!(page.status, 200);
    assert!(
        text_of(&page.body, "keys-error").contains("name_prefix"),
        "{}",
        page.body
    );
    let page = viewer.get(&format!("{path}?cursor=nope")).await;
    assert!(
        text_of(&page.body, "keys-error").contains("cursor"),
        "{}",
        page.body
    );
}

/// A console POST is refused for its body first (as an unreadable form), then for want of a
/// session, then for its CSRF token (the last one, should the field repeat), then for the role.
async fn console_posts_are_checked_in_order(app: TestApp) {
    let viewer = Console::login(&app, "viewer@example.com", "viewer").await;
    let admin = Console::login(&app, "admin@example.com", "admin").await;
    let csrf = keygate_control_plane::console::session::csrf_token(&viewer.token);
    let url = |path: &str| format!("{}{path}", app.base);
    let status_of = |r: awc::ClientResponse<_>| r.status().as_u16();
    let revoke = "/console/keys/key_nope/revoke";

    // Not a form, or too large a one: refused before the session is looked at.
    for cookie in [None, Some(&viewer.token)] {
        let mut req = viewer
            .client
            .post(url(revoke))
            .insert_header(("content-type", "application/json"));
        if let Some(t) = cookie {
            req = req.insert_header(("cookie", format!("keygate_session={t}")));
        }
        assert_eq!(status_of(req.send_body("{}").await.unwrap()), 415);
        let big = "x".repeat(70 * 1024);
        let mut req = viewer.client.post(url(revoke));
        if let Some(t) = cookie {
            req = req.insert_header(("cookie", format!("keygate_session={t}")));
        }
        let r = req.send_form(&[("reason", big.as_str())]).await.unwrap();
        assert_eq!(status_of(r), 413);
    }

    // A form without a session: on to the login page, whatever the CSRF token.
    let r = viewer
        .client
        .post(url(revoke))
        .send_form(&[("csrf_token", csrf.as_str())])
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers().get("location").unwrap(), "/console/login");

    // A wrong or missing CSRF token is refused before the role is.
    let csrf_refused = "CSRF token is missing or wrong";
    for fields in [
        vec![("confirm", "yes")],
        vec![("csrf_token", "nope")],
        vec![("csrf_token", csrf.as_str()), ("csrf_token", "nope")],
    ] {
        for path in [revoke, "/console/webhooks", "/console/tokens"] {
            let page = viewer
                .send(actix_web::http::Method::POST, path, Some(&fields))
                .await;
            assert_eq!(page.status, 403, "{path}");
            assert!(page.body.contains(csrf_refused), "{path}: {}", page.body);
        }
    }

    // The right token (the last one counts), then the role.
    let writers_only = "your role may read but not change anything";
    for path in [
        revoke,
        "/console/webhooks",
        "/console/projects/prj_nope/keys",
    ] {
        let fields = [("csrf_token", "nope"), ("csrf_token", csrf.as_str())];
        let page = viewer
            .send(actix_web::http::Method::POST, path, Some(&fields))
            .await;
        assert_eq!(page.status, 403, "{path}");
        assert!(page.body.contains(writers_only), "{path}: {}", page.body);
    }
    let page = admin.post("/console/tokens", &[("token_name", "t")]).await;
    assert_eq!(page.status, 403);
    assert!(page
        .body
        .contains("only owners may manage admins and tokens"));
    let page = admin.post("/console/admins/adm_nope/delete", &[]).await;
    assert_eq!(page.status, 403);

    // Every role may post its own forms: a viewer tries a key and logs out.
    let page = viewer.post("/console/try", &[("key", "")]).await;
    assert_ne!(page.status, 403, "{}", page.body);
    let page = viewer.post("/console/logout", &[]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/console/login"));
}
