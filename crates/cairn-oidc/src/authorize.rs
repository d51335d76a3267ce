//! The browser-facing endpoints: authorization (OIDC Core §3.1.2) and RP-initiated logout.
//!
//! The client and its redirect URI are checked first, and until both hold nothing is
//! redirected anywhere: the person sees an error page. After that every problem goes back to
//! the application as an RFC 6749 §4.1.2.1 error, with `state`. A person without a portal
//! session (or with one too old for `max_age`, or asked `prompt=login`) is sent to the
//! portal's login page with the request to come back to; the login there runs through
//! `authenticate` with protocol `oidc` and the application as resource.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use cairn_directory::{CodeRequest, Directory, SessionAccess};
use cairn_domain::application::{Application, SCOPES};
use cairn_domain::Session;

use crate::{ctx, server_error, Oidc};

/// The portal's session cookie (scoped to `/portal`, where these endpoints live).
const SESSION_COOKIE: &str = "cairn_portal";
/// Longest authorization request read: it travels through the login page and a cookie.
pub const MAX_REQUEST_BYTES: usize = 3072;
const MAX_STATE: usize = 1024;
const MAX_NONCE: usize = 512;

#[derive(Template)]
#[template(
    ext = "html",
    source = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{{ heading }}</title><link rel=\"stylesheet\" href=\"/static/cairn.css\"></head><body class=\"portal\"><main class=\"card\"><h1>{{ heading }}</h1><p>{{ body }}</p>{% if !form_action.is_empty() %}<form method=\"post\" action=\"{{ form_action }}\">{% for (k, v) in fields %}<input type=\"hidden\" name=\"{{ k }}\" value=\"{{ v }}\">{% endfor %}<button type=\"submit\">Sign out</button></form>{% endif %}</main></body></html>"
)]
struct MessagePage<'a> {
    heading: &'a str,
    body: &'a str,
    form_action: &'a str,
    fields: Vec<(String, String)>,
}

fn page(status: StatusCode, heading: &str, body: &str) -> Response {
    let html = MessagePage { heading, body, form_action: "", fields: vec![] }.render().unwrap_or_default();
    (status, [(CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// An error shown to the person (never redirected: the client or its redirect URI is wrong).
fn bad_request(why: &str) -> Response {
    page(StatusCode::BAD_REQUEST, "This sign-in request is not valid", why)
}

fn found(to: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(to) {
        Ok(v) => {
            r.headers_mut().insert(LOCATION, v);
        }
        Err(_) => return bad_request("the redirect URI cannot be used"),
    }
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The request's parameters, each at most once.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn twice(&self) -> Option<&str> {
        self.0
            .iter()
            .enumerate()
            .find(|(i, (k, _))| self.0[..*i].iter().any(|(p, _)| p == k))
            .map(|(_, (k, _))| k.as_str())
    }
}

/// Where an error or a code goes back: the registered redirect URI with the answer added to
/// its query (RFC 6749 §3.1.2 keeps the URI's own query), with `state` and `iss` (RFC 9207).
fn back(redirect_uri: &str, state: Option<&str>, iss: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut u) = url::Url::parse(redirect_uri) else { return bad_request("the redirect URI cannot be used") };
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", iss);
    }
    found(u.as_str())
}

/// A request whose client and redirect URI hold: errors from here on go back to the client.
struct Checked {
    app: Application,
    redirect_uri: String,
    state: Option<String>,
}

impl Checked {
    fn error(&self, dir: &Directory, error: &str, description: &str) -> Response {
        back(
            &self.redirect_uri,
            self.state.as_deref(),
            dir.config().issuer(),
            &[("error", error), ("error_description", description)],
        )
    }
}

/// Reads the client and its redirect URI; `Err` is the page the person sees.
async fn check_client(dir: &Directory, p: &Params) -> Result<Checked, Response> {
    if let Some(k @ ("client_id" | "redirect_uri")) = p.twice() {
        return Err(bad_request(&format!("{k} is given twice.")));
    }
    let Some(client_id) = p.get("client_id") else { return Err(bad_request("client_id is missing.")) };
    let app = match dir.application_by_client_id(client_id).await {
        Ok(Some(a)) if a.settings.active => a,
        Ok(_) => return Err(bad_request("No active application has this client_id.")),
        Err(e) => return Err(server_error(e)),
    };
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return Err(bad_request("redirect_uri is missing (Cairn requires it)."));
    };
    // Exactly as registered: no prefix, no normalization.
    if !app.settings.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(bad_request("redirect_uri is not one the application registered."));
    }
    let state = p.get("state").map(str::to_string);
    Ok(Checked { redirect_uri: redirect_uri.to_string(), app, state })
}

/// The rest of a valid request.
struct Request {
    code: CodeRequest,
    prompt: Vec<String>,
    max_age: Option<i64>,
}

/// An error for the client: RFC 6749's `error` and a description.
type Refused = (&'static str, String);

/// The rest of the request, or the error to send back.
fn check_request(c: &Checked, p: &Params) -> Result<Request, Refused> {
    let invalid = |m: String| Err(("invalid_request", m));
    if let Some(k) = p.twice() {
        return invalid(format!("{k} is given twice"));
    }
    if p.get("request").is_some() {
        return Err(("request_not_supported", "request objects are not supported".into()));
    }
    if p.get("request_uri").is_some() {
        return Err(("request_uri_not_supported", "request_uri is not supported".into()));
    }
    match p.get("response_type") {
        Some("code") => {}
        None => return invalid("response_type is missing".into()),
        Some(_) => return Err(("unsupported_response_type", "only response_type=code is supported".into())),
    }
    if p.get("response_mode").is_some_and(|m| m != "query") {
        return invalid("only response_mode=query is supported".into());
    }
    if c.state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
        return invalid(format!("state is longer than {MAX_STATE} bytes"));
    }
    let nonce = p.get("nonce").map(str::to_string);
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE) {
        return invalid(format!("nonce is longer than {MAX_NONCE} bytes"));
    }
    let scope: Vec<String> =
        p.get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()).map(String::from).collect();
    if !scope.iter().any(|s| s == "openid") {
        return Err(("invalid_scope", "scope must include openid".into()));
    }
    if let Some(s) = scope.iter().find(|s| !SCOPES.contains(&s.as_str()) || !c.app.settings.scopes.contains(s)) {
        let s: String = s.chars().take(64).collect();
        return Err(("invalid_scope", format!("scope '{s}' is not allowed for this application")));
    }
    let mut scope_dedup: Vec<String> = vec![];
    for s in scope {
        if !scope_dedup.contains(&s) {
            scope_dedup.push(s);
        }
    }
    let challenge = p.get("code_challenge").map(str::to_string);
    match (challenge.as_deref(), p.get("code_challenge_method")) {
        (Some(ch), Some("S256")) if cairn_directory::pkce_well_formed(ch) => {}
        (Some(_), Some("S256")) => {
            return invalid("code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]".into())
        }
        (Some(_), _) => return invalid("code_challenge_method must be S256 (plain is not accepted)".into()),
        (None, Some(_)) => return invalid("code_challenge_method without code_challenge".into()),
        (None, None) if c.app.settings.public => {
            return invalid(
                "PKCE is required of public clients: send code_challenge with code_challenge_method=S256".into(),
            )
        }
        (None, None) => {}
    }
    let prompt: Vec<String> =
        p.get("prompt").unwrap_or("").split(' ').filter(|s| !s.is_empty()).map(String::from).collect();
    if let Some(x) = prompt.iter().find(|x| !matches!(x.as_str(), "none" | "login" | "consent" | "select_account")) {
        let x: String = x.chars().take(32).collect();
        return invalid(format!("prompt '{x}' is not supported"));
    }
    if prompt.iter().any(|x| x == "none") && prompt.len() > 1 {
        return invalid("prompt=none cannot be combined with other values".into());
    }
    let max_age = match p.get("max_age") {
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (0..=315_360_000).contains(&n) => Some(n),
            _ => return invalid("max_age must be a whole number of seconds".into()),
        },
        None => None,
    };
    let code =
        CodeRequest { redirect_uri: c.redirect_uri.clone(), scope: scope_dedup, nonce, code_challenge: challenge };
    Ok(Request { code, prompt, max_age })
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

async fn session(dir: &Directory, headers: &HeaderMap) -> Option<(Session, cairn_domain::User)> {
    let c = cookie(headers, SESSION_COOKIE)?;
    dir.portal_session(&c, "portal").await.ok().flatten()
}

/// The parameters, or what is wrong with them (for the error page).
fn parse_params(raw: &str) -> Result<Params, String> {
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(format!("The request is longer than {MAX_REQUEST_BYTES} bytes."));
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|_| "The request's parameters cannot be read.".to_string())?;
    if pairs.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err("The request contains a NUL byte.".into());
    }
    Ok(Params(pairs))
}

pub(crate) async fn authorize_get(
    State(st): State<Oidc>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match parse_params(q.as_deref().unwrap_or("")) {
        Ok(p) => authorize(&st, addr, &headers, p).await,
        Err(m) => bad_request(&m),
    }
}

pub(crate) async fn authorize_post(
    State(st): State<Oidc>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    match parse_params(&body) {
        Ok(p) => authorize(&st, addr, &headers, p).await,
        Err(m) => bad_request(&m),
    }
}

async fn authorize(st: &Oidc, addr: SocketAddr, headers: &HeaderMap, p: Params) -> Response {
    let dir = &st.dir;
    let c = match check_client(dir, &p).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Request { code: req, prompt, max_age } = match check_request(&c, &p) {
        Ok(x) => x,
        Err((e, m)) => return c.error(dir, e, &m),
    };
    let none = prompt.iter().any(|x| x == "none");
    let now = dir.now();
    let s = session(dir, headers).await;
    // max_age=0 asks for a sign-in now, as prompt=login does.
    let fresh = |s: &Session| max_age.is_none_or(|m| m > 0 && (now - Directory::oidc_auth_time(s)).num_seconds() <= m);
    let (s, user) = match s {
        Some((s, u)) if fresh(&s) && !prompt.iter().any(|x| x == "login") => (s, u),
        _ if none => return c.error(dir, "login_required", "the person must sign in"),
        _ => return to_login(&p),
    };
    let ctx = ctx(Some(addr));
    match dir.oidc_session_access(&s, &c.app).await {
        Ok(SessionAccess::Allow(u)) => {
            match dir.oidc_issue_code(&ctx, &c.app, &u, &req, Directory::oidc_auth_time(&s)).await {
                Ok(code) => back(&c.redirect_uri, c.state.as_deref(), dir.config().issuer(), &[("code", &code)]),
                Err(e) => server_error(e),
            }
        }
        Ok(SessionAccess::Login) if none => c.error(dir, "interaction_required", "the person must sign in again"),
        Ok(SessionAccess::Login) => to_login(&p),
        Ok(SessionAccess::Deny(d)) => {
            if let Err(e) = dir.oidc_authorize_denied(&ctx, &c.app, &user.id, d.reason()).await {
                return server_error(e);
            }
            c.error(dir, "access_denied", "the user may not use this application")
        }
        Err(e) => server_error(e),
    }
}

/// To the portal's login, which comes back here once signed in (without `prompt` and
/// `max_age`, which that sign-in satisfies).
fn to_login(p: &Params) -> Response {
    let rest: Vec<(String, String)> = p.0.iter().filter(|(k, _)| k != "prompt" && k != "max_age").cloned().collect();
    let again = serde_urlencoded::to_string(&rest).unwrap_or_default();
    let q = serde_urlencoded::to_string([("oidc", again)]).unwrap_or_default();
    found(&format!("/portal/login?{q}"))
}

/// Where the portal sends a person whose sign-in was refused by the access decision (not
/// associated, staged, suspended, locked, expired): back to the application with
/// `access_denied`. The event was written by the sign-in.
pub(crate) async fn deny(State(st): State<Oidc>, RawQuery(q): RawQuery) -> Response {
    let p = match parse_params(q.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(m) => return bad_request(&m),
    };
    match check_client(&st.dir, &p).await {
        Ok(c) => c.error(&st.dir, "access_denied", "the user may not use this application"),
        Err(r) => r,
    }
}

// ---- logout ---------------------------------------------------------------------------------

pub(crate) async fn logout_get(
    State(st): State<Oidc>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match parse_params(q.as_deref().unwrap_or("")) {
        Ok(p) => logout(&st, addr, &headers, p, false).await,
        Err(m) => bad_request(&m),
    }
}

pub(crate) async fn logout_post(
    State(st): State<Oidc>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if form.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>() > MAX_REQUEST_BYTES {
        return bad_request(&format!("The request is longer than {MAX_REQUEST_BYTES} bytes."));
    }
    logout(&st, addr, &headers, Params(form), true).await
}

/// OIDC RP-Initiated Logout 1.0: ends the portal session, then goes to a registered
/// post-logout URI. Without a valid `id_token_hint` for the signed-in person, a GET asks the
/// person first (a link elsewhere must not sign anyone out).
async fn logout(st: &Oidc, addr: SocketAddr, headers: &HeaderMap, p: Params, confirmed: bool) -> Response {
    let dir = &st.dir;
    if let Some(k) = p.twice() {
        return bad_request(&format!("{k} is given twice."));
    }
    let hint = match p.get("id_token_hint") {
        Some(t) => match dir.oidc_id_token_claims(t).await {
            Ok(Some(c)) => Some(c),
            Ok(None) => return bad_request("id_token_hint is not an ID token this provider issued."),
            Err(e) => return server_error(e),
        },
        None => None,
    };
    let client_id =
        hint.as_ref().and_then(|c| c["aud"].as_str().map(str::to_string)).or(p.get("client_id").map(String::from));
    if let (Some(h), Some(c)) = (hint.as_ref().and_then(|c| c["aud"].as_str()), p.get("client_id")) {
        if h != c {
            return bad_request("client_id is not the audience of id_token_hint.");
        }
    }
    let app = match client_id {
        Some(id) => match dir.application_by_client_id(&id).await {
            Ok(a) => a,
            Err(e) => return server_error(e),
        },
        None => None,
    };
    let to = match p.get("post_logout_redirect_uri") {
        Some(u) => match &app {
            Some(a) if a.settings.post_logout_redirect_uris.iter().any(|r| r == u) => Some(u.to_string()),
            Some(_) => return bad_request("post_logout_redirect_uri is not one the application registered."),
            None => return bad_request("post_logout_redirect_uri needs id_token_hint or client_id."),
        },
        None => None,
    };
    let c = cookie(headers, SESSION_COOKIE);
    let signed_in = match &c {
        Some(c) => dir.session(c).await.ok().flatten(),
        None => None,
    };
    let hint_matches = match (&hint, &signed_in) {
        (Some(h), Some(s)) => h["sub"].as_str() == Some(s.user_id.as_str()),
        _ => false,
    };
    if signed_in.is_some() && !confirmed && !hint_matches {
        let fields = p.0.iter().filter(|(k, _)| k != "id_token_hint").cloned().collect();
        let html = MessagePage {
            heading: "Sign out?",
            body: "An application asks to sign you out of your organization's portal.",
            form_action: "/portal/oidc/logout",
            fields,
        }
        .render()
        .unwrap_or_default();
        return (StatusCode::OK, [(CACHE_CONTROL, "no-store")], Html(html)).into_response();
    }
    if let Err(e) = dir.oidc_logout(&ctx(Some(addr)), c.as_deref(), app.as_ref()).await {
        return server_error(e);
    }
    let mut r = match to {
        Some(u) => {
            let Ok(mut url) = url::Url::parse(&u) else { return bad_request("the post-logout URI cannot be used") };
            if let Some(s) = p.get("state") {
                url.query_pairs_mut().append_pair("state", s);
            }
            found(url.as_str())
        }
        None => page(StatusCode::OK, "You are signed out", "You can close this window."),
    };
    let secure = if dir.config().base_url.starts_with("https://") { "; Secure" } else { "" };
    let gone = format!("{SESSION_COOKIE}=; Path=/portal; HttpOnly; SameSite=Lax; Max-Age=0{secure}");
    r.headers_mut().append(SET_COOKIE, HeaderValue::from_str(&gone).expect("ASCII cookie"));
    r
}
