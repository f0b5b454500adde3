//! The local stack of README.md, "The local stack" (`cargo xtask up` runs it): the control plane on
//! embedded SQLite, the edge Worker in workerd, a demo origin and the browser example
//! (`examples/browser/`, on its own origin), until Ctrl-C.
//!
//! State lives under `.stack/` in the workspace: the control plane's data directory, the edge's
//! KV and Durable Objects, and the owner token of earlier runs (reused, so runs don't pile up
//! tokens).

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;

use keygate_tests::example_app::ExampleApp;
use keygate_tests::stack::{random_token, OriginChoice, Stack, StackOptions};
use keygate_tests::workerd::{workspace_root, wrangler_crons};
use serde_json::json;

fn env_port(name: &str, default: u16) -> Result<u16, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a port number")),
        _ => Ok(default),
    }
}

/// `KEYGATE_BOOTSTRAP_TOKEN`, else the token of an earlier run, else a new one (saved 0600).
fn owner_token(stack_dir: &Path) -> Result<String, String> {
    if let Ok(t) = std::env::var("KEYGATE_BOOTSTRAP_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_owned());
        }
    }
    let path = stack_dir.join("owner-token");
    if let Ok(t) = fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_owned());
        }
    }
    let token = random_token();
    fs::write(&path, &token).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    }
    Ok(token)
}

fn run() -> Result<(), String> {
    let root = workspace_root();
    let stack_dir = root.join(".stack");
    fs::create_dir_all(&stack_dir).map_err(|e| e.to_string())?;
    let origin = match std::env::var("KEYGATE_ORIGIN_URL") {
        Ok(url) if !url.trim().is_empty() => {
            OriginChoice::External(url.trim().trim_end_matches('/').to_owned())
        }
        _ => OriginChoice::Recording(env_port("KEYGATE_ORIGIN_PORT", 8788)?),
    };
    let options = StackOptions {
        refresh_seconds: 2.0,
        snapshot_validity_seconds: 86_400,
        usage_flush_seconds: 10.0,
        control_plane_port: env_port("KEYGATE_PORT", 8080)?,
        edge_port: env_port("KEYGATE_EDGE_PORT", 8787)?,
        origin,
        bootstrap_token: Some(owner_token(&stack_dir)?),
        data_dir: Some(stack_dir.join("keygate-data")),
        edge_state_dir: Some(stack_dir.join("edge")),
        crons: wrangler_crons(&root),
        ..StackOptions::default()
    };
    let stack = Stack::start(options)?;

    // A demo project and a fresh demo key (plaintext is only ever shown once).
    let projects = stack.api("GET", "/v1/projects", None);
    let existing = projects.body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["key_prefix"] == "demo"))
        .and_then(|p| p["id"].as_str())
        .map(str::to_owned);
    let project = match existing {
        Some(id) => id,
        None => {
            let r = stack.api(
                "POST",
                "/v1/projects",
                Some(&json!({
                    "name": "Demo",
                    "key_prefix": "demo",
                    "routes": [{"methods": ["*"], "path": "/orders/*", "scope": "orders:read"}],
                })),
            );
            r.body["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("cannot create the demo project: {}", r.body))?
        }
    };
    let key = stack.api(
        "POST",
        &format!("/v1/projects/{project}/keys"),
        Some(&json!({"name": "Demo key", "kind": "secret", "environment": "live", "scopes": ["orders:read"]})),
    );
    let demo_key = key.body["key"]
        .as_str()
        .ok_or_else(|| format!("cannot create the demo key: {}", key.body))?;

    // The browser example on its own origin, and a publishable key that allows only that origin.
    let app = ExampleApp::start(env_port("KEYGATE_APP_PORT", 8789)?)
        .map_err(|e| format!("browser example: {e}"))?;
    let web_key = stack.api(
        "POST",
        &format!("/v1/projects/{project}/keys"),
        Some(&json!({
            "name": "Browser example",
            "kind": "publishable",
            "environment": "live",
            "scopes": ["orders:read"],
            "restrictions": {"referrers": [
                app.referrer_pattern(),
                format!("localhost:{}", app.port()),
            ]},
        })),
    );
    let web_key = web_key.body["key"]
        .as_str()
        .ok_or_else(|| format!("cannot create the browser example's key: {}", web_key.body))?;

    let cp = &stack.control_plane_url;
    let edge = &stack.edge_url;
    println!();
    println!("Keygate local stack is up.");
    println!();
    println!("  control plane   {cp}   (API under /v1, OpenAPI at /openapi.json)");
    println!("  edge (workerd)  {edge}");
    println!("  origin          {}", stack.origin_url);
    println!("  browser example {}", app.url());
    println!("  data            {}", stack_dir.display());
    println!();
    println!("  owner token     {}", stack.owner_token);
    println!("  demo key        {demo_key}");
    println!("  browser key     {web_key}   (publishable, for the browser example's origin)");
    println!();
    println!("Try it (the edge picks up new keys within 2 s):");
    println!("  curl -i -H 'Authorization: Bearer {demo_key}' {edge}/orders/1");
    println!("  curl -i {edge}/orders/1                      # 401 missing_key");
    println!(
        "  curl -s -H 'Authorization: Bearer {}' {cp}/v1/projects/{project}/keys",
        stack.owner_token
    );
    println!();
    println!("Browser example (a page on its own origin calling the edge; see docs/browser.md):");
    println!("  {}/#edge={edge}&key={web_key}&path=/orders/1", app.url());
    println!();
    println!("Press Ctrl-C to stop.");

    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let _ = rx.recv();
    println!("\nStopping.");
    drop(app);
    drop(stack);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate-stack: {e}");
            ExitCode::FAILURE
        }
    }
}
