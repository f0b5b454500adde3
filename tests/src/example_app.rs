//! The browser example app (`examples/browser/`) served as static files from its own origin, as a
//! developer's web server would serve it. Files are read at each request, so an edit shows on
//! reload.

use std::path::PathBuf;

use crate::http::{StubResponse, StubServer};
use crate::workerd::workspace_root;

/// The files of the app, with their content types; anything else is a 404.
const FILES: [(&str, &str); 2] = [
    ("index.html", "text/html; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
];

/// The app's directory in the workspace.
pub fn app_dir() -> PathBuf {
    workspace_root().join("examples/browser")
}

/// A running app server on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct ExampleApp {
    server: StubServer,
}

impl ExampleApp {
    /// Serves the app on `127.0.0.1:port` (0: any free port).
    pub fn start(port: u16) -> std::io::Result<ExampleApp> {
        let dir = app_dir();
        let server = StubServer::start_on(port, move |req| {
            let name = match req.path().trim_start_matches('/') {
                "" => "index.html",
                other => other,
            };
            let Some((file, content_type)) = FILES.iter().find(|(f, _)| *f == name) else {
                return StubResponse::new(404, "text/plain", "not found");
            };
            match std::fs::read(dir.join(file)) {
                Ok(body) => StubResponse::new(200, content_type, body)
                    .with_header("Cache-Control", "no-store"),
                Err(e) => StubResponse::new(500, "text/plain", format!("{file}: {e}")),
            }
        })?;
        Ok(ExampleApp { server })
    }

    /// Its origin, `http://127.0.0.1:PORT`: what the browser sends in `Origin`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The referrer pattern that allows exactly this origin (docs/referrers.md).
    pub fn referrer_pattern(&self) -> String {
        format!("127.0.0.1:{}", self.server.port())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }
}
