//! Administrator sign-in (password, then TOTP once enrolled), sign-out, and the account page
//! where an administrator enrols an authenticator.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use cairn_directory::{AuthRequest, Authenticated, Credential, Ctx, Error, Refusal, ADMIN_LOGIN_REFUSED};
use cairn_domain::access::{Protocol, Step};
use cairn_domain::{Actor, Secret};
use serde_json::json;

use super::{cookie, get, notice, render, Chrome, Pairs, Signed, P, SESSION_COOKIE};
use crate::Shared;

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage<'a> {
    org: &'a str,
    csrf: &'a str,
    notice: &'a str,
    error: &'a str,
    email: &'a str,
}

#[derive(Template)]
#[template(path = "admin/totp.html")]
struct TotpPage<'a> {
    org: &'a str,
    csrf: &'a str,
    error: &'a str,
}

#[derive(Template)]
#[template(path = "admin/account.html")]
struct AccountPage<'a> {
    c: Chrome<'a>,
    role: &'a str,
    enrolled: bool,
    pending: bool,
    qr_svg: String,
    secret: String,
}

async fn plain(st: &Shared, headers: &HeaderMap) -> P {
    let (mut parts, _) = axum::http::Request::new(()).into_parts();
    parts.headers = headers.clone();
    P::from_parts(&parts, st).await
}

async fn plain_parts(st: &Shared, parts: &Parts) -> P {
    P::from_parts(parts, st).await
}

fn anon_ctx(p: &P) -> Ctx {
    Ctx::new(Actor { kind: "admin".into(), id: None, name: None }, "manual", p.addr.clone())
}

pub(super) async fn login_page(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Pairs>) -> Response {
    let p = plain(&st, &headers).await;
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        if let Ok(Some((s, _))) = st.dir.admin_session(&c).await {
            if s.kind == "admin" {
                return p.redirect("/admin/users");
            }
        }
    }
    let notice = match get(&q, "m") {
        Some("signed-out") => "You are signed out.",
        Some("again") => "Please sign in again.",
        _ => "",
    };
    p.html(StatusCode::OK, render(&LoginPage { org: &p.org, csrf: &p.csrf, notice, error: "", email: "" }))
}

async fn begin(st: &Shared, p: &P, headers: &HeaderMap, admin_id: &str, kind: &str, to: &str) -> Response {
    begin_with(st, p, headers, admin_id, kind, to, json!({})).await
}

async fn begin_with(
    st: &Shared,
    p: &P,
    headers: &HeaderMap,
    admin_id: &str,
    kind: &str,
    to: &str,
    data: serde_json::Value,
) -> Response {
    if let Some(c) = cookie(headers, SESSION_COOKIE) {
        let _ = st.dir.end_admin_session(&c).await;
    }
    match st.dir.start_admin_session_with(admin_id, kind, data).await {
        Ok(token) => {
            let mut r = p.redirect(to);
            r.headers_mut().append(SET_COOKIE, p.cookie(SESSION_COOKIE, &token, None));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "admin session failed");
            p.message(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Please try again in a moment.")
        }
    }
}

pub(super) async fn login_submit(
    State(st): State<Shared>,
    req_parts: RequestParts,
    Form(form): Form<Pairs>,
) -> Response {
    let p = plain_parts(&st, &req_parts.0).await;
    if let Some(r) = p.check(&form) {
        return r;
    }
    let headers = &req_parts.0.headers;
    let email = get(&form, "email").unwrap_or("").trim().to_string();
    let password = Secret::new(get(&form, "password").unwrap_or("").to_string());
    let req = AuthRequest {
        protocol: Protocol::AdminPortal,
        credential: Credential::Password { login: &email, password: &password, code: None },
        resource: None,
        client_addr: p.addr.clone(),
        device: None,
    };
    match st.dir.authenticate(&anon_ctx(&p), req).await {
        Ok(auth) => signed_in(&st, &p, headers, auth).await,
        Err(Error::Refused(r)) => {
            let shown: String = email.chars().take(cairn_directory::MAX_LOGIN_CHARS).collect();
            let (status, m) = refusal(r);
            p.html(status, render(&LoginPage { org: &p.org, csrf: &p.csrf, notice: "", error: m, email: &shown }))
        }
        Err(e) => {
            tracing::error!(error = %e, "admin login failed");
            p.message(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Please try again in a moment.")
        }
    }
}

fn refusal(r: Refusal) -> (StatusCode, &'static str) {
    match r {
        Refusal::Throttled => (StatusCode::TOO_MANY_REQUESTS, cairn_directory::THROTTLED),
        _ => (StatusCode::UNAUTHORIZED, ADMIN_LOGIN_REFUSED),
    }
}

/// Where an authentication leads: a full session, the code page, or (MFA required and no
/// authenticator yet) an `admin_enroll` session that opens the account page only.
async fn signed_in(st: &Shared, p: &P, headers: &HeaderMap, auth: Authenticated) -> Response {
    match auth {
        Authenticated::Granted(a) => begin(st, p, headers, a.id(), "admin", "/admin/users").await,
        Authenticated::Step { step, ticket, .. } => {
            if let Some(c) = cookie(headers, SESSION_COOKIE) {
                let _ = st.dir.end_admin_session(&c).await;
            }
            let to = match step {
                Step::SecondFactor => "/admin/totp",
                Step::Enroll => "/admin/account?m=enroll",
                // Administrators' passwords do not expire.
                Step::ChangePassword => "/admin/login?m=again",
            };
            let mut r = p.redirect(to);
            r.headers_mut().append(SET_COOKIE, p.cookie(SESSION_COOKIE, &ticket, None));
            r
        }
    }
}

/// The request head, for handlers that also read a body.
pub(super) struct RequestParts(Parts);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestParts {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestParts(parts.clone()))
    }
}

/// The code step's ticket the browser holds, if still valid.
async fn totp_step(st: &Shared, headers: &HeaderMap) -> Option<String> {
    let c = cookie(headers, SESSION_COOKIE)?;
    st.dir.step_ticket_valid(Protocol::AdminPortal, Step::SecondFactor, &c).await.ok()?.then_some(c)
}

pub(super) async fn totp_page(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let p = plain(&st, &headers).await;
    if totp_step(&st, &headers).await.is_none() {
        return p.redirect("/admin/login?m=again");
    }
    p.html(StatusCode::OK, render(&TotpPage { org: &p.org, csrf: &p.csrf, error: "" }))
}

pub(super) async fn totp_submit(
    State(st): State<Shared>,
    req_parts: RequestParts,
    Form(form): Form<Pairs>,
) -> Response {
    let p = plain_parts(&st, &req_parts.0).await;
    if let Some(r) = p.check(&form) {
        return r;
    }
    let headers = &req_parts.0.headers;
    let Some(ticket) = totp_step(&st, headers).await else {
        return p.redirect("/admin/login?m=again");
    };
    let req = AuthRequest {
        protocol: Protocol::AdminPortal,
        credential: Credential::SecondFactor { ticket: &ticket, code: get(&form, "code").unwrap_or("") },
        resource: None,
        client_addr: p.addr.clone(),
        device: None,
    };
    match st.dir.authenticate(&anon_ctx(&p), req).await {
        Ok(auth) => signed_in(&st, &p, headers, auth).await,
        Err(Error::Refused(r)) => {
            let (status, m) = refusal(r);
            p.html(status, render(&TotpPage { org: &p.org, csrf: &p.csrf, error: m }))
        }
        Err(e) => {
            tracing::error!(error = %e, "admin TOTP failed");
            p.message(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Please try again in a moment.")
        }
    }
}

pub(super) async fn logout(State(st): State<Shared>, headers: HeaderMap, Form(form): Form<Pairs>) -> Response {
    let p = plain(&st, &headers).await;
    if let Some(r) = p.check(&form) {
        return r;
    }
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        let _ = st.dir.end_admin_session(&c).await;
    }
    let mut r = p.redirect("/admin/login?m=signed-out");
    r.headers_mut().append(SET_COOKIE, p.cookie(SESSION_COOKIE, "", Some(0)));
    r
}

// ---- account: TOTP enrolment ------------------------------------------------------------------

async fn session_of(st: &Shared, headers: &HeaderMap) -> Option<cairn_domain::AdminSession> {
    let c = cookie(headers, SESSION_COOKIE)?;
    st.dir.admin_session(&c).await.ok()?.map(|(s, _)| s)
}

pub(super) async fn account(
    State(st): State<Shared>,
    s: Signed,
    headers: HeaderMap,
    Query(q): Query<Pairs>,
) -> Response {
    let enrolled = match st.dir.admin_totp_enrolled(&s.admin.id).await {
        Ok(b) => b,
        Err(e) => return s.fail(e),
    };
    let pending = session_of(&st, &headers)
        .await
        .and_then(|x| x.data.get("pending_totp").and_then(|v| v.as_str()).map(str::to_string));
    let (mut qr_svg, mut secret) = (String::new(), String::new());
    if let (false, Some(sealed)) = (enrolled, &pending) {
        match st.dir.admin_totp_enrollment(&s.admin, sealed).await {
            Ok((b32, svg)) => (secret, qr_svg) = (b32, svg),
            Err(e) => return s.fail(e),
        }
    }
    let error = if get(&q, "m") == Some("bad-code") {
        "The code does not match. Check the time on your phone and try the current code."
    } else {
        ""
    };
    let body = render(&AccountPage {
        c: s.chrome("account", notice(&q), error),
        role: s.admin.role.as_str(),
        enrolled,
        pending: !enrolled && pending.is_some(),
        qr_svg,
        secret,
    });
    s.html(body)
}

pub(super) async fn totp_start(
    State(st): State<Shared>,
    s: Signed,
    headers: HeaderMap,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.p.check(&form) {
        return r;
    }
    let Some(mut sess) = session_of(&st, &headers).await else { return s.p.redirect("/admin/login") };
    match st.dir.new_totp_secret() {
        Ok(sealed) => {
            sess.data = json!({ "pending_totp": sealed });
            if let Err(e) = st.dir.update_admin_session(&sess).await {
                return s.fail(e);
            }
            s.p.redirect("/admin/account")
        }
        Err(e) => s.fail(e),
    }
}

pub(super) async fn totp_confirm(
    State(st): State<Shared>,
    s: Signed,
    headers: HeaderMap,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.p.check(&form) {
        return r;
    }
    let Some(mut sess) = session_of(&st, &headers).await else { return s.p.redirect("/admin/login") };
    let Some(sealed) = sess.data.get("pending_totp").and_then(|v| v.as_str()).map(str::to_string) else {
        return s.p.redirect("/admin/account");
    };
    match st.dir.admin_confirm_totp(&s.ctx, &s.admin.id, &sealed, get(&form, "code").unwrap_or("")).await {
        Ok(()) => {
            if sess.kind == "admin_enroll" {
                // Enrolled: the held sign-in becomes a full one.
                if let Some(c) = cookie(&headers, SESSION_COOKIE) {
                    if let Err(e) = st.dir.finish_admin_enrolment(&c).await {
                        return s.fail(e);
                    }
                }
            } else {
                sess.data = json!({});
                let _ = st.dir.update_admin_session(&sess).await;
            }
            s.p.redirect("/admin/account?m=totp")
        }
        Err(Error::Invalid(_)) => s.p.redirect("/admin/account?m=bad-code"),
        Err(e) => s.fail(e),
    }
}

pub(super) async fn totp_remove(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.p.check(&form) {
        return r;
    }
    match st.dir.admin_remove_totp(&s.ctx, &s.admin.id).await {
        Ok(()) => s.p.redirect("/admin/account?m=totp-removed"),
        Err(e) => s.fail(e),
    }
}
