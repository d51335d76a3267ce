//! `POST /oauth2/token`: OAuth 2.0 client credentials (RFC 6749 §4.4) for service accounts.
//! The client authenticates with HTTP Basic (`client_secret_basic`) or form fields
//! (`client_secret_post`), never both; the secret is checked by the directory's one
//! authentication path (throttled per client address, one event per attempt). Errors carry
//! RFC 6749's `error` and `error_description` beside JumpCloud's `code`, `status`, `message`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_directory::{Ctx, Error, Refusal};
use cairn_domain::oauth::{ClientAuth, SCOPE};
use cairn_domain::{Actor, Secret};
use serde_json::json;

use crate::Shared;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A token request is a few form fields: anything larger is not one.
pub const TOKEN_BODY_LIMIT: usize = 8 * 1024;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(token)).layer(DefaultBodyLimit::max(TOKEN_BODY_LIMIT))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = Json(json!({
        "error": error,
        "error_description": description,
        "code": status.as_u16(),
        "status": status.canonical_reason().unwrap_or(""),
        "message": description,
    }));
    let mut r = (status, [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], body).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, "Basic realm=\"cairn\"".parse().expect("static header"));
    }
    r
}

#[utoipa::path(post, path = "/oauth2/token", operation_id = "oauth2_token", tag = "service accounts",
    responses((status = 200, description = "a bearer token"), (status = "4XX", description = "RFC 6749 error, JumpCloud-shaped", body = crate::openapi_doc::ErrorBody)))]
async fn token(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return oauth_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                &format!("a token request is at most {TOKEN_BODY_LIMIT} bytes"),
            )
        }
        Err(_) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the request body cannot be read"),
    };
    let form: Vec<(String, String)> =
        match std::str::from_utf8(&body).ok().and_then(|t| serde_urlencoded::from_str(t).ok()) {
            Some(f) => f,
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the body must be application/x-www-form-urlencoded (grant_type=client_credentials)",
                )
            }
        };
    // Each field at most once (RFC 6749 §3.1); the name of one given twice.
    let field = |name: &'static str| -> Result<Option<&str>, &'static str> {
        let mut it = form.iter().filter(|(k, _)| k == name);
        let first = it.next().map(|(_, v)| v.as_str());
        if it.next().is_some() {
            return Err(name);
        }
        Ok(first)
    };
    let (grant, form_id, form_secret, scope) =
        match (field("grant_type"), field("client_id"), field("client_secret"), field("scope")) {
            (Ok(g), Ok(i), Ok(s), Ok(sc)) => (g, i, s, sc),
            (Err(n), ..) | (_, Err(n), ..) | (_, _, Err(n), _) | (.., Err(n)) => {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &format!("{n} is given twice"))
            }
        };
    match grant {
        Some("client_credentials") => {}
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required"),
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
            )
        }
    }
    if let Some(sc) = scope {
        if sc.split(' ').any(|s| !s.is_empty() && s != SCOPE) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "the only scope is \"api\"");
        }
    }
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (client_id, secret) = match cairn_domain::oauth::client_auth(authorization, form_id, form_secret) {
        Ok(Some(ClientAuth { client_id, secret: Some(secret), .. })) => (client_id, secret),
        Ok(_) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is required: HTTP Basic or client_id and client_secret",
            )
        }
        Err(e) => {
            let status = if e.unauthorized { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
            return oauth_error(status, e.error, e.description);
        }
    };
    let client = addr.ip().to_string();
    let ctx = Ctx::new(Actor { kind: "anonymous".into(), id: None, name: None }, "oauth2", Some(client.clone()));
    let secret = Secret::new(secret);
    match st.dir.issue_client_token(&ctx, &client_id, &secret, Some(client)).await {
        Ok(t) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
            Json(json!({
                "access_token": t.token.expose(),
                "token_type": "Bearer",
                "expires_in": t.expires_in,
                "scope": SCOPE,
            })),
        )
            .into_response(),
        Err(Error::Refused(Refusal::Throttled)) => oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many failed attempts from this address: wait a minute, then try again",
        ),
        Err(Error::Refused(_)) => {
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "the client id or secret is not valid")
        }
        Err(e) => {
            tracing::error!(error = %e, "token request failed");
            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error; see the server log")
        }
    }
}
