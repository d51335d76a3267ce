//! Cairn's OpenID Connect provider (§2.2 Applications), mounted by the binary beside the
//! portals. The issuer is `CAIRN_BASE_URL` exactly, without a trailing slash.
//!
//! ```text
//!  GET  /.well-known/openid-configuration   discovery
//!  GET  /oidc/jwks                           published keys (RS256, EdDSA)
//!  GET  /portal/oidc/authorize               code flow; the portal's session and login
//!  POST /oidc/token                          authorization_code, refresh_token
//!  GET  /oidc/userinfo                       claims of the access token's scopes
//!  POST /oidc/introspect                     RFC 7662 (confidential clients, own tokens)
//!  POST /oidc/revoke                         RFC 7009
//!  GET  /portal/oidc/logout                  RP-initiated logout
//! ```
//! The browser-facing endpoints live under `/portal` because the portal's session cookie is
//! scoped there: signing in to an application is signing in to the portal. The protocol is
//! read and answered here; every decision is the directory's.

mod authorize;
mod token;

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_directory::{Ctx, Directory};
use cairn_domain::application::SCOPES;
use cairn_domain::Actor;
use serde_json::json;

/// What an OIDC request reaches: the directory.
#[derive(Clone)]
pub struct Oidc {
    pub dir: Directory,
}

/// Largest form body at the token, introspection and revocation endpoints.
pub const FORM_LIMIT: usize = 8 * 1024;

pub fn routes(dir: Directory) -> Router {
    let st = Oidc { dir };
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oidc/jwks", get(jwks))
        .route("/portal/oidc/authorize", get(authorize::authorize_get).post(authorize::authorize_post))
        .route("/portal/oidc/deny", get(authorize::deny))
        .route("/portal/oidc/logout", get(authorize::logout_get).post(authorize::logout_post))
        .route("/oidc/token", post(token::token))
        .route("/oidc/userinfo", get(token::userinfo).post(token::userinfo))
        .route("/oidc/introspect", post(token::introspect))
        .route("/oidc/revoke", post(token::revoke))
        .layer(axum::extract::DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(st)
}

fn ctx(addr: Option<SocketAddr>) -> Ctx {
    Ctx::new(Actor { kind: "anonymous".into(), id: None, name: None }, "oidc", addr.map(|a| a.ip().to_string()))
}

/// Bare JSON documents (discovery, JWKS) may be cached briefly; everything else is no-store.
fn public_json(v: serde_json::Value) -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(v)).into_response()
}

fn server_error(e: cairn_directory::Error) -> Response {
    tracing::error!(error = %e, "OIDC request failed");
    token::oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error; see the server log")
}

async fn discovery(axum::extract::State(st): axum::extract::State<Oidc>) -> Response {
    let iss = st.dir.config().issuer().to_string();
    public_json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/portal/oidc/authorize"),
        "token_endpoint": format!("{iss}/oidc/token"),
        "userinfo_endpoint": format!("{iss}/oidc/userinfo"),
        "jwks_uri": format!("{iss}/oidc/jwks"),
        "introspection_endpoint": format!("{iss}/oidc/introspect"),
        "revocation_endpoint": format!("{iss}/oidc/revoke"),
        "end_session_endpoint": format!("{iss}/portal/oidc/logout"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": cairn_directory::OIDC_ALGORITHMS,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "name",
            "given_name", "family_name", "preferred_username", "updated_at", "email", "email_verified", "groups"],
        "prompt_values_supported": ["none", "login"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    }))
}

async fn jwks(axum::extract::State(st): axum::extract::State<Oidc>) -> Response {
    match st.dir.oidc_jwks().await {
        Ok(v) => public_json(v),
        Err(e) => server_error(e),
    }
}

/// A bearer token from `Authorization: Bearer …`.
fn bearer(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string())
}
