//! HTTP routes, one module per resource. Handlers check roles through their `Authed<...>`
//! argument, run database work in `web::block`, and answer errors as problem+json.

pub mod accounts;
pub mod alerts;
pub mod keys;
pub mod leaks;
pub mod problems;
pub mod projects;
pub mod snapshot;
pub mod system;
pub mod usage;
pub mod webhooks;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::Problem;

/// Registers every route. Also the source of the OpenAPI document, so the document covers
/// exactly the routes that exist.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(
        // actix tries routes in registration order: the hot ones (verify, snapshot polling)
        // come first so they skip the pattern matching of the others.
        utoipa_actix_web::scope("/v1")
            .service(keys::verify)
            .service(snapshot::get)
            .service(snapshot::shard)
            .service(accounts::login)
            .service(accounts::logout)
            .service(accounts::change_password)
            .service(projects::create)
            .service(projects::list)
            .service(projects::get)
            .service(projects::update)
            .service(keys::create)
            .service(keys::list)
            .service(keys::get)
            .service(keys::update)
            .service(keys::rotate)
            .service(keys::revoke)
            .service(leaks::report)
            .service(alerts::list)
            .service(alerts::get)
            .service(alerts::acknowledge)
            .service(alerts::list_rules)
            .service(alerts::update_rule)
            .service(usage::series)
            .service(usage::project_series)
            .service(usage::sightings)
            .service(usage::record)
            .service(accounts::create_admin)
            .service(accounts::list_admins)
            .service(accounts::update_admin)
            .service(accounts::delete_admin)
            .service(accounts::create_token)
            .service(accounts::list_tokens)
            .service(accounts::delete_token)
            .service(accounts::audit)
            .service(webhooks::create)
            .service(webhooks::list)
            .service(webhooks::get)
            .service(webhooks::update)
            .service(webhooks::remove)
            .service(webhooks::rotate_secret)
            .service(webhooks::deliveries)
            .service(webhooks::delivery)
            .service(webhooks::retry)
            .service(snapshot::public_key)
            .service(snapshot::public_keys),
    )
    .service(system::healthz)
    .service(system::readyz)
    .service(system::openapi)
    .service(system::metrics);
}

/// The base document: info, security scheme and shared schemas.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Keygate control plane",
        description = "Issues API keys and publishes the signed snapshots that Keygate edges verify them with. Every error is application/problem+json with a stable `code`."
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem)),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa_actix_web::AppExt as _;
    let (_, doc) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(configure)
        .split_for_parts();
    doc
}

pub(crate) use crate::state::db;

/// The method and path templates of every route, to tell "no such path" (404) from "no such
/// method on this path" (405, with `Allow`). Built from the OpenAPI document, which is built
/// from the registered routes.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<(Vec<String>, Vec<String>)>,
}

impl RouteTable {
    /// From the document's paths.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Self {
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path.split('/').map(str::to_owned).collect();
                let methods = serde_json::to_value(item)
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .map(|o| {
                        o.keys()
                            .filter(|k| {
                                ["get", "put", "post", "delete", "patch", "head", "options"]
                                    .contains(&k.as_str())
                            })
                            .map(|k| k.to_ascii_uppercase())
                            .collect()
                    })
                    .unwrap_or_default();
                (segments, methods)
            })
            .collect();
        RouteTable { routes }
    }

    /// The methods allowed on `path`, if any route has that path.
    pub fn allowed_methods(&self, path: &str) -> Option<Vec<String>> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut allowed: Vec<String> = self
            .routes
            .iter()
            .filter(|(segments, _)| {
                segments.len() == parts.len()
                    && segments.iter().zip(&parts).all(|(s, p)| {
                        s == p || (s.starts_with('{') && s.ends_with('}') && !p.is_empty())
                    })
            })
            .flat_map(|(_, m)| m.iter().cloned())
            .collect();
        allowed.sort();
        allowed.dedup();
        (!allowed.is_empty()).then_some(allowed)
    }
}
