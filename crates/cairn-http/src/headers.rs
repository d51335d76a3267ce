//! Security headers (SECURITY.md; issue 13). Every response is `nosniff`. Every HTML page (the
//! admin and user portals, server-rendered) gets a Content-Security-Policy that allows only
//! this origin's scripts and styles (the portals' scripts live in `/static/admin.js`, none are
//! inline) and forbids framing, plus `X-Frame-Options: DENY` for older browsers and a
//! referrer policy that keeps one-time links (`/portal/reset?token=…`) from leaking to other
//! sites. With an `https` base URL every response also carries Strict-Transport-Security.

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::Shared;

/// The portals' policy: nothing inline, nothing from elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// A year; browsers then refuse plain HTTP to this host.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

pub async fn security_headers(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let https = st.dir.config().base_url.starts_with("https://");
    let html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let h = res.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if html {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    if https {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(STRICT_TRANSPORT_SECURITY));
    }
    res
}
