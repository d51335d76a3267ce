//! Cairn's HTTP front end: the JumpCloud-compatible REST API under `/api`, health and metrics.
//! Handlers translate HTTP to `cairn_directory` calls and back; no rule lives here.

mod admin;
mod api_applications;
mod api_bulk;
mod api_credentials;
mod api_directories;
mod api_grants;
mod api_groups;
mod api_lifecycle;
mod api_misc;
mod api_radius;
mod api_service;
mod api_users;
mod error;
mod extract;
mod headers;
mod oauth;
mod openapi;
mod openapi_doc;
mod portal;
mod scim;
mod shapes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cairn_directory::{Ctx, Directory};
use cairn_domain::Role;
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::{ApiError, ApiResult};
use extract::Caller;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest JSON body accepted by the API.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub dir: Directory,
    pub metrics: Option<PrometheusHandle>,
    /// Where the LDAP listeners run, for the admin portal's LDAP page (`None`: off).
    pub ldap: Option<LdapListing>,
    /// Where the RADIUS listener runs (`host:port`), for the admin portal (`None`: off).
    pub radius_addr: Option<String>,
}

/// The LDAP front end as the admin portal shows it.
#[derive(Debug, Clone)]
pub struct LdapListing {
    /// `ldap://host:port` (StartTLS offered), when on.
    pub ldap_url: Option<String>,
    /// `ldaps://host:port`, when on.
    pub ldaps_url: Option<String>,
    pub base_dn: String,
    /// SHA-256 of the TLS certificate.
    pub fingerprint: String,
}

pub type Shared = Arc<AppState>;

pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The router with another front end's routes (the OIDC provider) mounted beside the
/// portals, under the same security headers and request metrics.
pub fn router_with(state: AppState, extra: Router) -> Router {
    let state = Arc::new(state);
    // Every /api route is mounted through an OpenApiRouter, so the document is derived from
    // what is mounted (`api_openapi`).
    let (api, derived) = api_openapi(&state).split_for_parts();
    let api = api.layer(DefaultBodyLimit::max(BODY_LIMIT));
    let (oauth, oauth_doc) = oauth::routes().split_for_parts();
    let mut derived = derived;
    derived.merge(oauth_doc);
    let _ = openapi::DOCUMENT.set(openapi_doc::build(derived));
    Router::new()
        .nest("/api", api)
        .nest("/scim/v2", scim::routes(state.clone()).layer(DefaultBodyLimit::max(BODY_LIMIT)))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(oauth)
        .merge(portal::routes())
        .merge(admin::routes())
        .route("/static/cairn.css", get(stylesheet))
        .route("/static/admin.js", get(admin_script))
        .with_state(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(state, headers::security_headers))
        .layer(middleware::from_fn(record_metrics))
}

/// The `/api` routes with their OpenAPI operations: authenticated, except the document itself.
fn api_openapi(state: &Shared) -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .merge(api_users::routes())
        .merge(api_lifecycle::routes())
        .merge(api_credentials::routes())
        .merge(api_groups::routes())
        .merge(api_grants::routes())
        .merge(api_radius::routes())
        .merge(api_directories::routes())
        .merge(api_misc::routes())
        .merge(api_service::routes())
        .merge(api_applications::routes())
        .merge(scim::api_routes())
        // CSV import and bulk jobs still mount as a plain router, documented by hand
        // (`openapi_doc::PLAIN_ROUTES`), behind the same authentication.
        .merge(OpenApiRouter::from(api_bulk::routes()))
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .routes(routes!(openapi::document))
}

/// Authenticates `/api` requests by `x-api-key` or `Authorization: Bearer`, refuses changes
/// by read-only keys, and hands the caller to the handler.
async fn authenticate(State(st): State<Shared>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let presented = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_string).or_else(|| {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|s| s.trim().to_string())
    });
    let Some(presented) = presented.filter(|k| !k.is_empty()) else {
        metrics::counter!("cairn_auth_total", "protocol" => "api", "outcome" => "failure").increment(1);
        return ApiError::new(StatusCode::UNAUTHORIZED, "an API key is required: send it in the x-api-key header")
            .into_response();
    };
    // An API key, or a service account's bearer token from /oauth2/token.
    let key = match st.dir.authenticate_api(&presented).await {
        Ok(Some(k)) => k,
        Ok(None) => {
            metrics::counter!("cairn_auth_total", "protocol" => "api", "outcome" => "failure").increment(1);
            return ApiError::new(StatusCode::UNAUTHORIZED, "the API key or token is not valid (or has expired)")
                .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    metrics::counter!("cairn_auth_total", "protocol" => "api", "outcome" => "success").increment(1);
    if let Some(org) = req.headers().get("x-org-id").and_then(|v| v.to_str().ok()) {
        match st.dir.organization_id().await {
            Ok(id) if id == org => {}
            Ok(_) => {
                return ApiError::new(StatusCode::FORBIDDEN, format!("x-org-id '{org}' is not this organization"))
                    .into_response()
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || (req.method() == Method::POST && req.uri().path().starts_with("/search/"));
    if key.role == Role::ReadOnly && !reads {
        return ApiError::new(StatusCode::FORBIDDEN, "this API key or service account is read-only").into_response();
    }
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let ctx = Ctx::new(key.actor, "api", client);
    req.extensions_mut().insert(Caller { ctx, role: key.role });
    next.run(req).await
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/cairn.css"),
    )
}

async fn admin_script() -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/admin.js"),
    )
}

async fn readyz(State(st): State<Shared>) -> Response {
    match st.dir.ready().await {
        Ok(true) => (StatusCode::OK, "ready\n").into_response(),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database unreachable: {e}\n")).into_response(),
    }
}

async fn metrics(State(st): State<Shared>) -> Response {
    let Some(handle) = &st.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response();
    };
    if let Ok(g) = st.dir.gauges().await {
        for (s, n) in [("STAGED", g.staged), ("ACTIVATED", g.activated), ("SUSPENDED", g.suspended)] {
            metrics::gauge!("cairn_users", "state" => s).set(n as f64);
        }
        metrics::gauge!("cairn_outbox_depth").set(g.outbox_depth as f64);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("cairn_http_requests_total", "listener" => "http", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("cairn_http_request_duration_seconds", "listener" => "http", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}
