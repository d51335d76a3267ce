//! The back-channel endpoints: token (RFC 6749 §3.2, OIDC Core §3.1.3), userinfo (§5.3),
//! introspection (RFC 7662) and revocation (RFC 7009). Clients authenticate as registered:
//! `client_secret_basic` (form-encoded parts, RFC 6749 §2.3.1), `client_secret_post`, or —
//! public clients — their `client_id` alone; secrets are checked by the directory's one
//! authentication path.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_directory::{AuthRequest, Authenticated, Credential, Ctx, Error, IssuedTokens, Principal, Refusal};
use cairn_domain::access::Protocol;
use cairn_domain::application::Application;
use cairn_domain::oauth::client_auth;
use cairn_domain::Secret;
use serde_json::{json, Value};

use crate::{bearer, ctx, server_error, Oidc, FORM_LIMIT};

/// RFC 6749 §5.2's error body, never cached; 401s say how to authenticate.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = Json(json!({ "error": error, "error_description": description }));
    let mut r = (status, [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], body).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, "Basic realm=\"cairn\"".parse().expect("static header"));
    }
    r
}

fn no_store(v: Value) -> Response {
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(v)).into_response()
}

/// A form body whose fields each appear at most once (RFC 6749 §3.1).
pub(crate) struct FormFields(Vec<(String, String)>);

/// Why a form body was refused (`invalid_request`).
pub(crate) struct FormError(StatusCode, String);

impl IntoResponse for FormError {
    fn into_response(self) -> Response {
        oauth_error(self.0, "invalid_request", &self.1)
    }
}

impl FormFields {
    pub(crate) fn parse(
        body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Result<FormFields, FormError> {
        let bad = |m: String| FormError(StatusCode::BAD_REQUEST, m);
        let body = match body {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(FormError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a request is at most {FORM_LIMIT} bytes"),
                ))
            }
            Err(_) => return Err(bad("the body cannot be read".into())),
        };
        let pairs: Vec<(String, String)> = std::str::from_utf8(&body)
            .ok()
            .and_then(|t| serde_urlencoded::from_str(t).ok())
            .ok_or_else(|| bad("the body must be application/x-www-form-urlencoded".into()))?;
        if let Some((k, _)) = pairs.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
            let k: String = k.chars().filter(|c| *c != '\0').take(64).collect();
            return Err(bad(format!("{k} contains a NUL byte")));
        }
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(p, _)| p == k) {
                let k: String = k.chars().take(64).collect();
                return Err(bad(format!("{k} is given twice")));
            }
        }
        Ok(FormFields(pairs))
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// The client the request authenticates as. `confidential_only` refuses public clients
/// (introspection).
async fn client(
    st: &Oidc,
    ctx: &Ctx,
    headers: &HeaderMap,
    form: &FormFields,
    confidential_only: bool,
) -> Result<Application, Response> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let auth = match client_auth(authorization, form.get("client_id"), form.get("client_secret")) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is required: HTTP Basic, client_id and client_secret, or a public client's client_id",
            ))
        }
        Err(e) => {
            let status = if e.unauthorized { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
            return Err(oauth_error(status, e.error, e.description));
        }
    };
    let refused = || oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "the client id or secret is not valid");
    let app = match &auth.secret {
        None => {
            // A public client names itself; there is nothing to check but that it is one.
            match st.dir.application_by_client_id(&auth.client_id).await {
                Ok(Some(a)) if a.settings.public && !confidential_only => a,
                Ok(_) => return Err(refused()),
                Err(e) => return Err(server_error(e)),
            }
        }
        Some(secret) => {
            let secret = Secret::new(secret.clone());
            let req = AuthRequest {
                protocol: Protocol::Oidc,
                credential: Credential::ClientSecret { client_id: &auth.client_id, secret: &secret },
                resource: None,
                client_addr: ctx.client_addr.clone(),
                device: None,
            };
            match st.dir.authenticate(ctx, req).await {
                Ok(Authenticated::Granted(Principal::Application(a))) => *a,
                Ok(_) => return Err(refused()),
                Err(Error::Refused(Refusal::Throttled)) => {
                    return Err(oauth_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "slow_down",
                        "too many failed attempts from this address: wait a minute, then try again",
                    ))
                }
                Err(Error::Refused(_)) => return Err(refused()),
                Err(e) => return Err(server_error(e)),
            }
        }
    };
    if !app.settings.active {
        return Err(refused());
    }
    // The registered method, and no other (a public client's `none` is checked above).
    if auth.secret.is_some() && auth.method != app.settings.token_endpoint_auth_method {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!("this client authenticates with {}", app.settings.token_endpoint_auth_method),
        ));
    }
    Ok(app)
}

/// A back-channel request's form, its context and the client it authenticates as.
async fn authenticated(
    st: &Oidc,
    addr: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    confidential_only: bool,
) -> Result<(Ctx, FormFields, Application), Response> {
    let form = FormFields::parse(body).map_err(IntoResponse::into_response)?;
    let ctx = ctx(Some(addr));
    let app = client(st, &ctx, headers, &form, confidential_only).await?;
    Ok((ctx, form, app))
}

fn tokens_json(t: &IssuedTokens) -> Value {
    let mut v = json!({
        "access_token": t.access_token.expose(),
        "token_type": "Bearer",
        "expires_in": t.expires_in,
        "id_token": t.id_token,
        "scope": t.scope,
    });
    if let Some(r) = &t.refresh_token {
        v["refresh_token"] = json!(r.expose());
    }
    v
}

pub(crate) async fn token(
    State(st): State<Oidc>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (ctx, form, app) = match authenticated(&st, addr, &headers, body, false).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let grant = match form.get("grant_type") {
        Some(g @ ("authorization_code" | "refresh_token")) => g,
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required"),
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
            )
        }
    };
    let result = if grant == "authorization_code" {
        let Some(code) = form.get("code") else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code is required");
        };
        st.dir.oidc_redeem_code(&ctx, &app, code, form.get("redirect_uri"), form.get("code_verifier")).await
    } else {
        let Some(rt) = form.get("refresh_token") else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required");
        };
        st.dir.oidc_refresh(&ctx, &app, rt, form.get("scope")).await
    };
    match result {
        Ok(Ok(t)) => no_store(tokens_json(&t)),
        Ok(Err(r)) => {
            let status = if r.error == "slow_down" { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::BAD_REQUEST };
            oauth_error(status, r.error, &r.description)
        }
        Err(e) => server_error(e),
    }
}

/// OIDC Core §5.3: the claims of a live access token (Bearer header, or `access_token` in a
/// POST form).
pub(crate) async fn userinfo(
    State(st): State<Oidc>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let from_form = match body {
        Ok(b) if !b.is_empty() => match FormFields::parse(Ok(b)) {
            Ok(f) => f.get("access_token").map(str::to_string),
            Err(e) => return e.into_response(),
        },
        _ => None,
    };
    let token = match (bearer(&headers), from_form) {
        (Some(_), Some(_)) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "send the access token once")
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return invalid_token("an access token is required (Authorization: Bearer …)"),
    };
    match st.dir.oidc_userinfo(&token).await {
        Ok(Some(claims)) => no_store(claims),
        Ok(None) => invalid_token("the access token is not valid (unknown, expired or revoked)"),
        Err(e) => server_error(e),
    }
}

/// RFC 6750 §3.1.
fn invalid_token(description: &str) -> Response {
    let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
    let v = format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, v.parse().expect("ASCII header"));
    r
}

/// RFC 7662: a confidential client asks about one of its own tokens; anything else is
/// `{"active": false}`.
pub(crate) async fn introspect(
    State(st): State<Oidc>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (_, form, app) = match authenticated(&st, addr, &headers, body, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(token) = form.get("token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    match st.dir.oidc_token_info(token).await {
        Ok(Some(t)) if t.application.id == app.id => no_store(json!({
            "active": true,
            "scope": t.scope,
            "client_id": app.client_id,
            "username": t.user.username,
            "sub": t.user.id,
            "aud": app.client_id,
            "iss": st.dir.config().issuer(),
            "iat": t.issued.timestamp(),
            "exp": t.expires.timestamp(),
            "token_type": if t.kind == "access" { "Bearer" } else { "refresh_token" },
        })),
        Ok(_) => no_store(json!({ "active": false })),
        Err(e) => server_error(e),
    }
}

/// RFC 7009: 200 whether or not the token was known (a client learns nothing of others').
pub(crate) async fn revoke(
    State(st): State<Oidc>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (ctx, form, app) = match authenticated(&st, addr, &headers, body, false).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(token) = form.get("token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    match st.dir.oidc_revoke(&ctx, &app, token).await {
        Ok(()) => no_store(json!({})),
        Err(e) => server_error(e),
    }
}
