//! The user portal (§8): activation and reset links, login with forced change and TOTP,
//! profile and own password. Server-rendered; every form carries a CSRF token (double-submit:
//! a cookie and a hidden field that must match); sessions are cookies whose hash is stored,
//! so suspension, forced change and TOTP reset end them at once by deleting the rows.

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use cairn_directory::{AuthRequest, Authenticated, Credential, Ctx, Error, Principal, Refusal};
use cairn_domain::access::{Protocol, Step};
use cairn_domain::graph::{ResourceKind, ResourceRef};
use cairn_domain::{Actor, Secret, Session, User};
use rand::RngCore;
use serde_json::json;

use crate::Shared;

const SESSION_COOKIE: &str = "cairn_portal";
const CSRF_COOKIE: &str = "cairn_csrf";
/// The OIDC authorization request a sign-in continues to (base64url of its parameters).
const OIDC_COOKIE: &str = "cairn_oidc";
/// Longest authorization request carried through the sign-in.
const MAX_OIDC_REQUEST: usize = 3072;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/portal", get(|| async { Redirect::to("/portal/profile") }))
        .route("/portal/", get(|| async { Redirect::to("/portal/profile") }))
        .route("/portal/login", get(login_page).post(login_submit))
        .route("/portal/totp", get(totp_page).post(totp_submit))
        .route("/portal/enroll", get(enroll_page).post(enroll_submit))
        .route("/portal/change-password", get(change_page).post(change_submit))
        .route("/portal/profile", get(profile))
        .route("/portal/logout", post(logout))
        .route("/portal/reset-request", get(reset_request_page).post(reset_request_submit))
        .route("/portal/reset", get(reset_page).post(reset_submit))
        .route("/portal/activate", get(activate_page).post(activate_submit))
}

// ---- plumbing -----------------------------------------------------------------------------

/// A cookie's value from the request (shared with the admin portal).
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// 48 hex characters of randomness: CSRF tokens (shared with the admin portal).
pub(crate) fn random() -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What every page needs: the organization name, the CSRF token (and whether its cookie must
/// be set), the secure-cookie flag, the caller.
struct Page {
    org: String,
    csrf: String,
    set_csrf: bool,
    secure: bool,
    ctx: Ctx,
}

async fn page(st: &Shared, headers: &HeaderMap, addr: Option<SocketAddr>) -> Page {
    let org = st.dir.organization().await.map(|o| o.settings.name).unwrap_or_else(|_| "Cairn".into());
    let (csrf, set_csrf) = match cookie(headers, CSRF_COOKIE) {
        Some(c) if c.len() == 48 && c.bytes().all(|b| b.is_ascii_hexdigit()) => (c, false),
        _ => (random(), true),
    };
    let secure = st.dir.config().base_url.starts_with("https://");
    let ctx = Ctx::new(Actor { kind: "user".into(), id: None, name: None }, "portal", addr.map(|a| a.ip().to_string()));
    Page { org, csrf, set_csrf, secure, ctx }
}

impl Page {
    fn cookie(&self, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
        let mut c = format!("{name}={value}; Path=/portal; HttpOnly; SameSite=Lax");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(a) = max_age {
            c.push_str(&format!("; Max-Age={a}"));
        }
        HeaderValue::from_str(&c).expect("cookie is ASCII")
    }

    /// Renders with the CSRF cookie set when it was missing; never cached.
    fn html(&self, status: StatusCode, body: String) -> Response {
        let mut r = (status, Html(body)).into_response();
        if self.set_csrf {
            r.headers_mut().append(SET_COOKIE, self.cookie(CSRF_COOKIE, &self.csrf, None));
        }
        r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    fn redirect(&self, to: &str) -> Response {
        let mut r = Redirect::to(to).into_response();
        if self.set_csrf {
            r.headers_mut().append(SET_COOKIE, self.cookie(CSRF_COOKIE, &self.csrf, None));
        }
        r
    }

    /// The refusal for a form whose token does not match the cookie, if it does not.
    fn csrf_refusal(&self, form: &HashMap<String, String>) -> Option<Response> {
        match form.get("csrf") {
            Some(f) if !self.set_csrf && subtle_eq(f, &self.csrf) => None,
            _ => Some(self.html(
                StatusCode::FORBIDDEN,
                render(&MessagePage { org: &self.org, notice: "", error: "", heading: "Please try again", body: "The form had expired or did not come from this site. Go back, reload the page and submit it again." }),
            )),
        }
    }
}

fn subtle_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn render<T: Template>(t: &T) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        "<!doctype html><p>Something went wrong; see the server log.</p>".into()
    })
}

/// The session behind the cookie, if any and not revoked.
async fn session(st: &Shared, headers: &HeaderMap) -> Option<(String, Session)> {
    let c = cookie(headers, SESSION_COOKIE)?;
    let s = st.dir.session(&c).await.ok()??;
    Some((c, s))
}

/// The signed-in user: a full session of a user who may still sign in (ACTIVATED, not
/// locked, password not expired).
async fn signed_in(st: &Shared, headers: &HeaderMap) -> Option<(String, Session, User)> {
    let c = cookie(headers, SESSION_COOKIE)?;
    let (s, u) = st.dir.portal_session(&c, "portal").await.ok()??;
    Some((c, s, u))
}

fn user_ctx(p: &Page, u: &User) -> Ctx {
    Ctx {
        actor: Actor { kind: "user".into(), id: Some(u.id.clone()), name: Some(u.username.clone()) },
        ..p.ctx.clone()
    }
}

/// A sign-in that continues to an application's authorization request: the request's
/// parameters and the application (the sign-in's resource).
struct Flow {
    query: String,
    app: cairn_domain::application::Application,
}

impl Flow {
    fn protocol(flow: &Option<Flow>) -> Protocol {
        if flow.is_some() {
            Protocol::Oidc
        } else {
            Protocol::Portal
        }
    }
    fn resource(flow: &Option<Flow>) -> Option<ResourceRef> {
        flow.as_ref().map(|f| ResourceRef::new(ResourceKind::Application, f.app.id.clone()))
    }
    /// The session kind of a step (`portal_change`, `oidc_enroll`, …).
    fn kind(flow: &Option<Flow>, step: &str) -> String {
        format!("{}_{step}", if flow.is_some() { "oidc" } else { "portal" })
    }
}

/// The application and request of an authorization query, if its client is an active one.
async fn flow_of(st: &Shared, query: &str) -> Option<Flow> {
    if query.len() > MAX_OIDC_REQUEST {
        return None;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    let client_id = pairs.iter().find(|(k, _)| k == "client_id").map(|(_, v)| v.clone())?;
    let app = st.dir.application_by_client_id(&client_id).await.ok()??;
    app.settings.active.then(|| Flow { query: query.to_string(), app })
}

/// The sign-in's authorization request, from its cookie.
async fn flow(st: &Shared, headers: &HeaderMap) -> Option<Flow> {
    use base64::Engine;
    let raw = cookie(headers, OIDC_COOKIE)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).ok()?;
    flow_of(st, &String::from_utf8(bytes).ok()?).await
}

/// Goes on to `to` by a page rather than a redirect: a redirect answering a form would be held
/// to the form's `form-action 'self'`, and the authorization answer leaves for the
/// application's origin.
fn leave(p: &Page, to: &str) -> Response {
    let mut r = p.html(StatusCode::OK, render(&ContinuePage { org: &p.org, notice: "", error: "", to }));
    r.headers_mut().append(SET_COOKIE, p.cookie(OIDC_COOKIE, "", Some(0)));
    r
}

/// Moves the browser on from an authentication: a full session once granted, else the page
/// of the next step with its ticket as the cookie.
/// `mfa`: a second factor was verified in this sign-in (an application may require one).
/// A sign-in for an application goes back to its authorization request once granted.
async fn continue_login(
    st: &Shared,
    p: &Page,
    auth: Authenticated,
    old_cookie: Option<&str>,
    mfa: bool,
    flow: &Option<Flow>,
) -> Response {
    if let Some(c) = old_cookie {
        let _ = st.dir.end_session(c).await;
    }
    let (token, to) = match auth {
        Authenticated::Granted(principal) => {
            let data = json!({ "auth_time": st.dir.now().timestamp(), "mfa": mfa });
            match st.dir.start_session(principal.id(), "portal", data).await {
                Ok(token) => {
                    if let Some(f) = flow {
                        let mut r = leave(p, &format!("/portal/oidc/authorize?{}", f.query));
                        r.headers_mut().append(SET_COOKIE, p.cookie(SESSION_COOKIE, &token, None));
                        return r;
                    }
                    (token, "/portal/profile")
                }
                Err(e) => return error_page(p, e),
            }
        }
        Authenticated::Step { step, ticket, .. } => (
            ticket,
            match step {
                Step::SecondFactor => "/portal/totp",
                Step::ChangePassword => "/portal/change-password",
                Step::Enroll => "/portal/enroll",
            },
        ),
    };
    let mut r = p.redirect(to);
    r.headers_mut().append(SET_COOKIE, p.cookie(SESSION_COOKIE, &token, None));
    r
}

fn error_page(p: &Page, e: Error) -> Response {
    tracing::error!(error = %e, "portal request failed");
    p.html(
        StatusCode::INTERNAL_SERVER_ERROR,
        render(&MessagePage {
            org: &p.org,
            notice: "",
            error: "",
            heading: "Something went wrong",
            body: "Please try again in a moment. If it keeps happening, tell your administrator.",
        }),
    )
}

fn secret(form: &HashMap<String, String>, k: &str) -> Secret {
    Secret::new(form.get(k).cloned().unwrap_or_default())
}

// ---- templates ------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/login.html")]
struct LoginPage<'a> {
    org: &'a str,
    notice: &'a str,
    error: &'a str,
    csrf: &'a str,
    login: &'a str,
}

#[derive(Template)]
#[template(path = "portal/continue.html")]
struct ContinuePage<'a> {
    org: &'a str,
    notice: &'a str,
    error: &'a str,
    to: &'a str,
}

#[derive(Template)]
#[template(path = "portal/totp.html")]
struct TotpPage<'a> {
    org: &'a str,
    notice: &'a str,
    error: &'a str,
    csrf: &'a str,
}

#[derive(Template)]
#[template(path = "portal/enroll.html")]
struct EnrollPage<'a> {
    org: &'a str,
    notice: &'a str,
    error: &'a str,
    csrf: &'a str,
    qr_svg: &'a str,
    secret: &'a str,
}

#[derive(Template)]
#[template(path = "portal/password.html")]
struct PasswordPage<'a> {
    org: &'a str,
    notice: &'a str,
    error: &'a str,
    csrf: &'a str,
    heading: &'a str,
    intro: &'a str,
    action: &'a str,
    token: &'a str,
    ask_current: bool,
    min_length: u32,
    blocked: &'a str,
    show_back: bool,
}

#[derive(Template)]
#[template(path = "portal/reset_request.html")]
struct ResetRequestPage<'a> {
    org: &'a str,
    notice: &'a str,
    error: &'a str,
    csrf: &'a str,
    sent: bool,
}

#[derive(Template)]
#[template(path = "portal/profile.html")]
struct ProfilePage<'a> {
    org: &'a str,
    notice: &'a str,
    error: &'a str,
    csrf: &'a str,
    name: String,
    username: &'a str,
    email: &'a str,
    fields: Vec<(&'static str, String)>,
    totp: bool,
    can_change: bool,
    authority: &'a str,
    /// The applications the user may open: label and where it lives.
    apps: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "portal/message.html")]
struct MessagePage<'a> {
    org: &'a str,
    notice: &'a str,
    error: &'a str,
    heading: &'a str,
    body: &'a str,
}

// ---- login ----------------------------------------------------------------------------------

async fn login_page(
    State(st): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = page(&st, &headers, None).await;
    // A sign-in for an application: its request is kept in a cookie until the sign-in ends.
    let flow = match q.get("oidc") {
        Some(query) => flow_of(&st, query).await,
        None => None,
    };
    if flow.is_none() && signed_in(&st, &headers).await.is_some() {
        return p.redirect("/portal/profile");
    }
    let app_notice;
    let notice = match (&flow, q.get("m").map(String::as_str)) {
        (Some(f), _) => {
            app_notice = format!("Sign in to continue to {}.", f.app.label());
            app_notice.as_str()
        }
        (None, Some("password-set")) => "Your password is set. Sign in with it now.",
        (None, Some("signed-out")) => "You are signed out.",
        (None, Some("again")) => "Please sign in again.",
        _ => "",
    };
    let mut r = p.html(StatusCode::OK, render(&LoginPage { org: &p.org, notice, error: "", csrf: &p.csrf, login: "" }));
    match &flow {
        Some(f) => {
            use base64::Engine;
            let v = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(f.query.as_bytes());
            r.headers_mut().append(SET_COOKIE, p.cookie(OIDC_COOKIE, &v, Some(600)));
        }
        None if cookie(&headers, OIDC_COOKIE).is_some() => {
            r.headers_mut().append(SET_COOKIE, p.cookie(OIDC_COOKIE, "", Some(0)));
        }
        None => {}
    }
    r
}

async fn login_submit(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let p = page(&st, &headers, Some(addr)).await;
    if let Some(r) = p.csrf_refusal(&form) {
        return r;
    }
    let login = form.get("login").map(|s| s.trim().to_string()).unwrap_or_default();
    let password = secret(&form, "password");
    let flow = flow(&st, &headers).await;
    let req = AuthRequest {
        protocol: Flow::protocol(&flow),
        credential: Credential::Password { login: &login, password: &password, code: None },
        resource: Flow::resource(&flow),
        client_addr: p.ctx.client_addr.clone(),
        device: None,
    };
    match st.dir.authenticate(&p.ctx, req).await {
        Ok(auth) => continue_login(&st, &p, auth, cookie(&headers, SESSION_COOKIE).as_deref(), false, &flow).await,
        // The password was right but the application is not this person's to use (not
        // associated, staged, suspended, locked, expired): the application hears
        // `access_denied`.
        Err(Error::Refused(Refusal::Denied(_))) if flow.is_some() => {
            let f = flow.as_ref().expect("checked");
            leave(&p, &format!("/portal/oidc/deny?{}", f.query))
        }
        Err(Error::Refused(r)) => {
            // Keep what is shown of the login short: it is echoed into the page.
            let shown: String = login.chars().take(cairn_directory::MAX_LOGIN_CHARS).collect();
            let status = if r == Refusal::Throttled { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::UNAUTHORIZED };
            let m = Error::Refused(r).to_string();
            p.html(status, render(&LoginPage { org: &p.org, notice: "", error: &m, csrf: &p.csrf, login: &shown }))
        }
        Err(e) => error_page(&p, e),
    }
}

/// The ticket of a sign-in step the browser holds, if it is still valid.
async fn step_ticket(st: &Shared, headers: &HeaderMap, step: Step, flow: &Option<Flow>) -> Option<String> {
    let c = cookie(headers, SESSION_COOKIE)?;
    st.dir.step_ticket_valid(Flow::protocol(flow), step, &c).await.ok()?.then_some(c)
}

async fn step_session(st: &Shared, headers: &HeaderMap, kind: &str) -> Option<(String, Session)> {
    session(st, headers).await.filter(|(_, s)| s.kind == kind)
}

async fn totp_page(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let p = page(&st, &headers, None).await;
    let flow = flow(&st, &headers).await;
    if step_ticket(&st, &headers, Step::SecondFactor, &flow).await.is_none() {
        return p.redirect("/portal/login?m=again");
    }
    p.html(StatusCode::OK, render(&TotpPage { org: &p.org, notice: "", error: "", csrf: &p.csrf }))
}

async fn totp_submit(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let p = page(&st, &headers, Some(addr)).await;
    if let Some(r) = p.csrf_refusal(&form) {
        return r;
    }
    let flow = flow(&st, &headers).await;
    let Some(ticket) = step_ticket(&st, &headers, Step::SecondFactor, &flow).await else {
        return p.redirect("/portal/login?m=again");
    };
    let code = form.get("code").map(String::as_str).unwrap_or("");
    let req = AuthRequest {
        protocol: Flow::protocol(&flow),
        credential: Credential::SecondFactor { ticket: &ticket, code },
        resource: Flow::resource(&flow),
        client_addr: p.ctx.client_addr.clone(),
        device: None,
    };
    match st.dir.authenticate(&p.ctx, req).await {
        Ok(auth) => continue_login(&st, &p, auth, Some(&ticket), true, &flow).await,
        Err(Error::Refused(Refusal::Denied(_))) if flow.is_some() => {
            let f = flow.as_ref().expect("checked");
            leave(&p, &format!("/portal/oidc/deny?{}", f.query))
        }
        Err(Error::Refused(r)) => {
            let status = if r == Refusal::Throttled { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::UNAUTHORIZED };
            let m = if r == Refusal::Throttled {
                Error::Refused(r).to_string()
            } else {
                "The code is not valid. Try the current code from your authenticator app.".to_string()
            };
            p.html(status, render(&TotpPage { org: &p.org, notice: "", error: &m, csrf: &p.csrf }))
        }
        Err(e) => error_page(&p, e),
    }
}

async fn enroll_page(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let p = page(&st, &headers, None).await;
    let flow = flow(&st, &headers).await;
    let Some((_, mut s)) = step_session(&st, &headers, &Flow::kind(&flow, "enroll")).await else {
        return p.redirect("/portal/login?m=again");
    };
    let Ok(user) = st.dir.get_user(&s.user_id).await else {
        return p.redirect("/portal/login?m=again");
    };
    // One pending secret per enrolment, kept (sealed) in the session until confirmed.
    let sealed = match s.data.get("pending").and_then(|v| v.as_str()) {
        Some(x) => x.to_string(),
        None => match st.dir.new_totp_secret() {
            Ok(sealed) => {
                s.data = json!({ "pending": sealed });
                if let Err(e) = st.dir.update_session(&s).await {
                    return error_page(&p, e);
                }
                sealed
            }
            Err(e) => return error_page(&p, e),
        },
    };
    match st.dir.totp_enrollment(&user, &sealed).await {
        Ok((b32, _uri, svg)) => p.html(
            StatusCode::OK,
            render(&EnrollPage { org: &p.org, notice: "", error: "", csrf: &p.csrf, qr_svg: &svg, secret: &b32 }),
        ),
        Err(e) => error_page(&p, e),
    }
}

async fn enroll_submit(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let p = page(&st, &headers, Some(addr)).await;
    if let Some(r) = p.csrf_refusal(&form) {
        return r;
    }
    let flow = flow(&st, &headers).await;
    let Some((c, s)) = step_session(&st, &headers, &Flow::kind(&flow, "enroll")).await else {
        return p.redirect("/portal/login?m=again");
    };
    let Some(sealed) = s.data.get("pending").and_then(|v| v.as_str()) else {
        return p.redirect("/portal/enroll");
    };
    let Ok(user) = st.dir.get_user(&s.user_id).await else {
        return p.redirect("/portal/login?m=again");
    };
    let ctx = user_ctx(&p, &user);
    match st.dir.confirm_totp(&ctx, &s.user_id, sealed, form.get("code").map(String::as_str).unwrap_or("")).await {
        Ok(u) => continue_login(&st, &p, Authenticated::Granted(Principal::User(u)), Some(&c), true, &flow).await,
        Err(Error::Invalid(e)) => {
            let msg = e.first().map(|e| e.message.clone()).unwrap_or_default();
            match st.dir.totp_enrollment(&user, sealed).await {
                Ok((b32, _, svg)) => p.html(
                    StatusCode::BAD_REQUEST,
                    render(&EnrollPage {
                        org: &p.org,
                        notice: "",
                        error: &msg,
                        csrf: &p.csrf,
                        qr_svg: &svg,
                        secret: &b32,
                    }),
                ),
                Err(e) => error_page(&p, e),
            }
        }
        Err(e) => error_page(&p, e),
    }
}

// ---- passwords ------------------------------------------------------------------------------

async fn min_length(st: &Shared) -> u32 {
    st.dir.organization().await.map(|o| o.settings.password_policy.min_length).unwrap_or(12)
}

fn authority_text(u: &User) -> Option<&'static str> {
    u.password_authority().map(|a| match a {
        cairn_domain::PasswordAuthority::ActiveDirectory => "your organization's Active Directory",
        cairn_domain::PasswordAuthority::Scim => "your organization's identity provider",
    })
}

fn first_error(e: &Error) -> String {
    match e {
        Error::Invalid(v) => v.first().map(|f| f.message.clone()).unwrap_or_default(),
        Error::Conflict(m) | Error::NotFound(m) | Error::Unauthorized(m) => m.clone(),
        _ => "Something went wrong; please try again.".into(),
    }
}

fn confirm_matches(form: &HashMap<String, String>) -> bool {
    form.get("password") == form.get("confirm")
}

async fn change_page(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let p = page(&st, &headers, None).await;
    let flow = flow(&st, &headers).await;
    let forced = step_session(&st, &headers, &Flow::kind(&flow, "change")).await;
    let user = match &forced {
        Some((_, s)) => st.dir.get_user(&s.user_id).await.ok(),
        None => signed_in(&st, &headers).await.map(|(_, _, u)| u),
    };
    let Some(user) = user else { return p.redirect("/portal/login?m=again") };
    let blocked =
        authority_text(&user).map(|a| format!("Your password is managed by {a}. Change it there.")).unwrap_or_default();
    let (heading, intro) = if forced.is_some() {
        ("Choose a new password", "Your administrator asks you to change your password before you continue.")
    } else {
        ("Change your password", "")
    };
    let min = min_length(&st).await;
    p.html(
        StatusCode::OK,
        render(&PasswordPage {
            org: &p.org,
            notice: "",
            error: "",
            csrf: &p.csrf,
            heading,
            intro,
            action: "/portal/change-password",
            token: "",
            ask_current: forced.is_none(),
            min_length: min,
            blocked: &blocked,
            show_back: forced.is_none(),
        }),
    )
}

async fn change_submit(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let p = page(&st, &headers, Some(addr)).await;
    if let Some(r) = p.csrf_refusal(&form) {
        return r;
    }
    let flow = flow(&st, &headers).await;
    let forced = step_session(&st, &headers, &Flow::kind(&flow, "change")).await;
    let current = signed_in(&st, &headers).await;
    let (cookie_value, user) = match (&forced, &current) {
        (Some((c, s)), _) => match st.dir.get_user(&s.user_id).await {
            Ok(u) => (c.clone(), u),
            Err(_) => return p.redirect("/portal/login?m=again"),
        },
        (None, Some((c, _, u))) => (c.clone(), u.clone()),
        (None, None) => return p.redirect("/portal/login?m=again"),
    };
    let ctx = user_ctx(&p, &user);
    let min = min_length(&st).await;
    let new = secret(&form, "password");
    let result = if !confirm_matches(&form) {
        Err(Error::invalid("confirm", "The two new passwords are not the same."))
    } else if forced.is_some() {
        st.dir.change_password_with_ticket(&ctx, Flow::protocol(&flow), &cookie_value, &new).await
    } else {
        // The change ends every session of the user; a fresh one keeps this browser in.
        st.dir
            .change_own_password(&ctx, &user.id, &secret(&form, "current_password"), &new)
            .await
            .map(|u| Authenticated::Granted(Principal::User(u)))
    };
    match result {
        Ok(auth) if forced.is_some() => continue_login(&st, &p, auth, Some(&cookie_value), false, &flow).await,
        Ok(_) => {
            // Back on the profile with a word that it worked.
            let mut r = p.redirect("/portal/profile?m=password-changed");
            if let Ok(token) = st.dir.start_session(&user.id, "portal", json!({})).await {
                r.headers_mut().append(SET_COOKIE, p.cookie(SESSION_COOKIE, &token, None));
            }
            r
        }
        Err(e @ (Error::Invalid(_) | Error::Conflict(_))) => {
            let msg = first_error(&e);
            let heading = if forced.is_some() { "Choose a new password" } else { "Change your password" };
            p.html(
                StatusCode::BAD_REQUEST,
                render(&PasswordPage {
                    org: &p.org,
                    notice: "",
                    error: &msg,
                    csrf: &p.csrf,
                    heading,
                    intro: "",
                    action: "/portal/change-password",
                    token: "",
                    ask_current: forced.is_none(),
                    min_length: min,
                    blocked: "",
                    show_back: forced.is_none(),
                }),
            )
        }
        Err(Error::Unauthorized(_) | Error::Refused(_)) => p.redirect("/portal/login?m=again"),
        Err(e) => error_page(&p, e),
    }
}

/// The activation and reset pages share one flow: show the form while the link is valid,
/// set the password (consuming the link), then send the person to sign in.
async fn link_page(st: &Shared, headers: &HeaderMap, q: &HashMap<String, String>, kind: &str) -> Response {
    let p = page(st, headers, None).await;
    let token = q.get("token").cloned().unwrap_or_default();
    let (heading, action) = if kind == "activation" {
        ("Activate your account", "/portal/activate")
    } else {
        ("Choose a new password", "/portal/reset")
    };
    let user =
        st.dir.link_user(&token, kind).await.ok().flatten().filter(|u| u.state == cairn_domain::State::Activated);
    let Some(user) = user else {
        return p.html(
            StatusCode::NOT_FOUND,
            render(&MessagePage { org: &p.org, notice: "", error: "", heading: "This link cannot be used", body: "It has expired or has already been used. Ask for a new one: use \"Forgot your password?\" on the sign-in page, or ask your administrator." }),
        );
    };
    let intro = format!("Choose the password for {} ({}).", user.username, user.email);
    let blocked = authority_text(&user)
        .map(|a| format!("Your password is managed by {a}; it cannot be set here."))
        .unwrap_or_default();
    let min = min_length(st).await;
    p.html(
        StatusCode::OK,
        render(&PasswordPage {
            org: &p.org,
            notice: "",
            error: "",
            csrf: &p.csrf,
            heading,
            intro: &intro,
            action,
            token: &token,
            ask_current: false,
            min_length: min,
            blocked: &blocked,
            show_back: false,
        }),
    )
}

async fn link_submit(
    st: &Shared,
    addr: SocketAddr,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    kind: &str,
) -> Response {
    let p = page(st, headers, Some(addr)).await;
    if let Some(r) = p.csrf_refusal(form) {
        return r;
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let result = if !confirm_matches(form) {
        Err(Error::invalid("confirm", "The two new passwords are not the same."))
    } else {
        st.dir.set_password_with_link(&p.ctx, &token, kind, &secret(form, "password")).await
    };
    match result {
        Ok(_) => p.redirect("/portal/login?m=password-set"),
        Err(Error::NotFound(_)) => link_page(st, headers, &HashMap::from([("token".to_string(), token)]), kind).await,
        Err(e @ (Error::Invalid(_) | Error::Conflict(_))) => {
            let msg = first_error(&e);
            let (heading, action) = if kind == "activation" {
                ("Activate your account", "/portal/activate")
            } else {
                ("Choose a new password", "/portal/reset")
            };
            let min = min_length(st).await;
            p.html(
                StatusCode::BAD_REQUEST,
                render(&PasswordPage {
                    org: &p.org,
                    notice: "",
                    error: &msg,
                    csrf: &p.csrf,
                    heading,
                    intro: "",
                    action,
                    token: &token,
                    ask_current: false,
                    min_length: min,
                    blocked: "",
                    show_back: false,
                }),
            )
        }
        Err(e) => error_page(&p, e),
    }
}

async fn activate_page(
    State(st): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    link_page(&st, &headers, &q, "activation").await
}

async fn activate_submit(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    link_submit(&st, addr, &headers, &form, "activation").await
}

async fn reset_page(
    State(st): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    link_page(&st, &headers, &q, "reset").await
}

async fn reset_submit(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    link_submit(&st, addr, &headers, &form, "reset").await
}

async fn reset_request_page(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let p = page(&st, &headers, None).await;
    p.html(StatusCode::OK, render(&ResetRequestPage { org: &p.org, notice: "", error: "", csrf: &p.csrf, sent: false }))
}

/// Answers the same page whether or not the account exists (§3.5).
async fn reset_request_submit(
    State(st): State<Shared>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let p = page(&st, &headers, Some(addr)).await;
    if let Some(r) = p.csrf_refusal(&form) {
        return r;
    }
    let login = form.get("login").cloned().unwrap_or_default();
    if !login.trim().is_empty() {
        match st.dir.request_password_reset(&p.ctx, &login).await {
            Ok(()) => {}
            // Per address, so it says nothing about the account.
            Err(e @ Error::Refused(Refusal::Throttled)) => {
                let m = e.to_string();
                return p.html(
                    StatusCode::TOO_MANY_REQUESTS,
                    render(&ResetRequestPage { org: &p.org, notice: "", error: &m, csrf: &p.csrf, sent: false }),
                );
            }
            Err(e) => tracing::error!(error = %e, "reset request failed"),
        }
    }
    p.html(StatusCode::OK, render(&ResetRequestPage { org: &p.org, notice: "", error: "", csrf: &p.csrf, sent: true }))
}

// ---- profile --------------------------------------------------------------------------------

async fn profile(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let p = page(&st, &headers, None).await;
    let Some((_, _, u)) = signed_in(&st, &headers).await else {
        return p.redirect("/portal/login");
    };
    let notice =
        if q.get("m").map(String::as_str) == Some("password-changed") { "Your password was changed." } else { "" };
    let mut fields = vec![];
    for (label, key) in [
        ("First name", "firstname"),
        ("Last name", "lastname"),
        ("Job title", "jobTitle"),
        ("Department", "department"),
        ("Company", "company"),
        ("Location", "location"),
        ("Employee ID", "employeeIdentifier"),
    ] {
        if let Some(v) = u.text(key).filter(|v| !v.is_empty()) {
            fields.push((label, v.to_string()));
        }
    }
    let authority = authority_text(&u).unwrap_or("");
    let apps = match st.dir.applications_of_user(&u.id).await {
        Ok(a) => a.iter().map(|a| (a.label().to_string(), a.launch_url())).collect(),
        Err(e) => return error_page(&p, e),
    };
    p.html(
        StatusCode::OK,
        render(&ProfilePage {
            org: &p.org,
            notice,
            error: "",
            csrf: &p.csrf,
            name: cairn_domain::mail::display_name(&u),
            username: &u.username,
            email: &u.email,
            fields,
            totp: u.totp_enabled,
            can_change: authority.is_empty(),
            authority,
            apps,
        }),
    )
}

async fn logout(State(st): State<Shared>, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let p = page(&st, &headers, None).await;
    if let Some(r) = p.csrf_refusal(&form) {
        return r;
    }
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        let _ = st.dir.end_session(&c).await;
    }
    let mut r = p.redirect("/portal/login?m=signed-out");
    r.headers_mut().append(SET_COOKIE, p.cookie(SESSION_COOKIE, "", Some(0)));
    r
}
