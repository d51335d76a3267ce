//! The admin portal (§7): server-rendered pages under `/admin` for the administrators that
//! `cairn admin create` makes. Like the user portal: sessions are cookies whose hash is
//! stored (in `admin_sessions`), every form carries a double-submit CSRF token, pages are never
//! cached. Every change calls the same `cairn_directory` method as the API, as
//! `Actor::admin(...)` with source `manual`; read-only administrators see every page and
//! change nothing (the forms are hidden and the handlers refuse).

mod applications;
mod auth;
mod directories;
mod ldap;
mod pages;
mod radius;
mod service_accounts;
mod settings;
mod users;

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::header::{CACHE_CONTROL, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{self, post};
use axum::Router;
use cairn_directory::{Ctx, Error};
use cairn_domain::{Actor, Admin, Role};
use chrono::{DateTime, Utc};

use crate::Shared;

const SESSION_COOKIE: &str = "cairn_admin";
const CSRF_COOKIE: &str = "cairn_admin_csrf";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/admin", routing::get(|| async { Redirect::to("/admin/users") }))
        .route("/admin/", routing::get(|| async { Redirect::to("/admin/users") }))
        .route("/admin/login", routing::get(auth::login_page).post(auth::login_submit))
        .route("/admin/totp", routing::get(auth::totp_page).post(auth::totp_submit))
        .route("/admin/logout", post(auth::logout))
        .route("/admin/account", routing::get(auth::account))
        .route("/admin/account/totp", post(auth::totp_start))
        .route("/admin/account/totp/confirm", post(auth::totp_confirm))
        .route("/admin/account/totp/remove", post(auth::totp_remove))
        .route("/admin/users", routing::get(users::list))
        .route("/admin/users/export", routing::get(users::export))
        .route("/admin/users/columns", routing::get(users::columns_page).post(users::columns_save))
        .route("/admin/users/actions", post(users::action_form))
        .route("/admin/users/actions/run", post(users::action_run))
        .route("/admin/users/new", routing::get(users::new_page).post(users::new_submit))
        .route("/admin/users/{id}", routing::get(users::details).post(users::details_save))
        .route("/admin/users/{id}/groups", post(users::details_groups))
        .route("/admin/settings", routing::get(settings::page).post(settings::confirm))
        .route("/admin/settings/apply", post(settings::apply))
        .route(
            "/admin/import",
            routing::get(pages::import_page)
                .post(pages::import_upload)
                .layer(DefaultBodyLimit::max(cairn_directory::MAX_IMPORT_BYTES)),
        )
        .route("/admin/import/run", post(pages::import_run).layer(DefaultBodyLimit::max(64 * 1024 * 1024)))
        .route("/admin/import/template.csv", routing::get(pages::import_template))
        .route("/admin/import/{id}", routing::get(pages::import_job))
        .route("/admin/groups", routing::get(pages::groups).post(pages::group_create))
        .route("/admin/groups/{id}", routing::get(pages::group))
        .route("/admin/groups/{id}/members", post(pages::group_members))
        .route("/admin/service-accounts", routing::get(service_accounts::page).post(service_accounts::create))
        .route("/admin/service-accounts/{id}/delete", post(service_accounts::delete))
        .route("/admin/applications", routing::get(applications::list).post(applications::create))
        .route("/admin/applications/{id}", routing::get(applications::page).post(applications::save))
        .route("/admin/applications/{id}/secret", post(applications::rotate))
        .route("/admin/applications/{id}/delete", post(applications::delete))
        .route("/admin/applications/{id}/associations", post(applications::grant))
        .route("/admin/ldap", routing::get(ldap::page).post(ldap::save))
        .route("/admin/ldap/associations", post(ldap::grant))
        .route("/admin/directories", routing::get(directories::list).post(directories::create))
        .route("/admin/directories/{id}", routing::get(directories::details).post(directories::save))
        .route("/admin/directories/{id}/sync", post(directories::sync))
        .route("/admin/directories/{id}/delete", post(directories::delete))
        .route("/admin/radius", routing::get(radius::list).post(radius::create))
        .route("/admin/radius/{id}", routing::get(radius::details).post(radius::save))
        .route("/admin/radius/{id}/associations", post(radius::grant))
        .route("/admin/radius/{id}/delete", post(radius::delete))
        .route("/admin/outbox", routing::get(pages::outbox))
        .route("/admin/events", routing::get(pages::events))
}

// ---- plumbing -----------------------------------------------------------------------------

/// Form or query pairs, repeated keys kept (checkbox lists).
pub(crate) type Pairs = Vec<(String, String)>;

pub(crate) fn get<'a>(pairs: &'a Pairs, k: &str) -> Option<&'a str> {
    pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

pub(crate) fn text(pairs: &Pairs, k: &str) -> String {
    get(pairs, k).map(|s| s.trim().to_string()).unwrap_or_default()
}

pub(crate) fn all<'a>(pairs: &'a Pairs, k: &str) -> Vec<&'a str> {
    pairs.iter().filter(|(a, _)| a == k).map(|(_, v)| v.as_str()).collect()
}

use crate::portal::{cookie, random};

pub(crate) fn render<T: Template>(t: &T) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "admin template failed");
        "<!doctype html><p>Something went wrong; see the server log.</p>".into()
    })
}

fn subtle_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Shown in tables: UTC, to the minute.
pub(crate) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// What every page needs before knowing who asks: the organization's name, the CSRF token
/// (and whether its cookie must be set), the secure-cookie flag, the client address.
pub(crate) struct P {
    pub org: String,
    pub csrf: String,
    set_csrf: bool,
    secure: bool,
    pub addr: Option<String>,
}

impl P {
    async fn from_parts(parts: &Parts, st: &Shared) -> P {
        let org = st.dir.organization().await.map(|o| o.settings.name).unwrap_or_else(|_| "Cairn".into());
        let (csrf, set_csrf) = match cookie(&parts.headers, CSRF_COOKIE) {
            Some(c) if c.len() == 48 && c.bytes().all(|b| b.is_ascii_hexdigit()) => (c, false),
            _ => (random(), true),
        };
        let secure = st.dir.config().base_url.starts_with("https://");
        let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        P { org, csrf, set_csrf, secure, addr }
    }

    fn cookie(&self, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
        let mut c = format!("{name}={value}; Path=/admin; HttpOnly; SameSite=Lax");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(a) = max_age {
            c.push_str(&format!("; Max-Age={a}"));
        }
        HeaderValue::from_str(&c).expect("cookie is ASCII")
    }

    fn finish(&self, mut r: Response) -> Response {
        if self.set_csrf {
            r.headers_mut().append(SET_COOKIE, self.cookie(CSRF_COOKIE, &self.csrf, None));
        }
        r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// An HTML page, with the CSRF cookie when it was missing; never cached.
    pub fn html(&self, status: StatusCode, body: String) -> Response {
        self.finish((status, Html(body)).into_response())
    }

    pub fn redirect(&self, to: &str) -> Response {
        self.finish(Redirect::to(to).into_response())
    }

    /// The refusal of a form whose token does not match the cookie, if it does not.
    pub fn check(&self, form: &Pairs) -> Option<Response> {
        match get(form, "csrf") {
            Some(f) if !self.set_csrf && subtle_eq(f, &self.csrf) => None,
            _ => Some(self.message(
                StatusCode::FORBIDDEN,
                "Please try again",
                "The form had expired or did not come from this site. Go back, reload the page and submit it again.",
            )),
        }
    }

    pub fn message(&self, status: StatusCode, heading: &str, body: &str) -> Response {
        self.html(status, render(&MessagePage { org: &self.org, heading, body }))
    }
}

#[derive(Template)]
#[template(path = "admin/message.html")]
struct MessagePage<'a> {
    org: &'a str,
    heading: &'a str,
    body: &'a str,
}

/// A signed-in administrator and the page plumbing; extracting it sends anyone else to the
/// login page.
pub(crate) struct Signed {
    pub p: P,
    pub admin: Admin,
    pub ctx: Ctx,
}

impl FromRequestParts<Shared> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Self::Rejection> {
        let p = P::from_parts(parts, st).await;
        let session = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(c) => st.dir.admin_session(&c).await.ok().flatten(),
            None => None,
        };
        match session {
            Some((s, admin)) if s.kind == "admin" || s.kind == "admin_enroll" => {
                // An administrator who must enrol an authenticator sees only the account page
                // (the session's kind says so; nothing a form writes into it can change that).
                let path = parts.uri.path();
                if s.kind == "admin_enroll" && !(path.starts_with("/admin/account") || path == "/admin/logout") {
                    return Err(p.redirect("/admin/account?m=enroll"));
                }
                let ctx = Ctx::new(Actor::admin(&admin.id, &admin.email), "manual", p.addr.clone());
                Ok(Signed { p, admin, ctx })
            }
            _ => Err(p.redirect("/admin/login")),
        }
    }
}

impl Signed {
    pub fn ro(&self) -> bool {
        self.admin.role == Role::ReadOnly
    }

    /// The page furniture for a template.
    pub fn chrome<'a>(&'a self, section: &'a str, notice: &'a str, error: &'a str) -> Chrome<'a> {
        Chrome { org: &self.p.org, csrf: &self.p.csrf, me: &self.admin.email, ro: self.ro(), section, notice, error }
    }

    pub fn html(&self, body: String) -> Response {
        self.p.html(StatusCode::OK, body)
    }

    /// Refuses a change by a read-only administrator, or a form without the right token.
    pub fn may_change(&self, form: &Pairs) -> Option<Response> {
        if let Some(r) = self.p.check(form) {
            return Some(r);
        }
        if self.ro() {
            return Some(self.p.message(
                StatusCode::FORBIDDEN,
                "Read-only access",
                "Your administrator account is read-only: it can see everything and change nothing.",
            ));
        }
        None
    }

    pub fn fail(&self, e: Error) -> Response {
        match e {
            Error::NotFound(m) => self.p.message(StatusCode::NOT_FOUND, "Not found", &m),
            Error::Forbidden(m) => self.p.message(StatusCode::FORBIDDEN, "Not allowed", &m),
            e @ (Error::Invalid(_) | Error::Conflict(_)) => {
                self.p.message(StatusCode::BAD_REQUEST, "That did not work", &e.to_string())
            }
            e => {
                tracing::error!(error = %e, "admin portal request failed");
                self.p.message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Please try again in a moment; the server log says more.",
                )
            }
        }
    }
}

/// The frame around every signed-in page.
pub(crate) struct Chrome<'a> {
    pub org: &'a str,
    pub csrf: &'a str,
    pub me: &'a str,
    pub ro: bool,
    pub section: &'a str,
    pub notice: &'a str,
    pub error: &'a str,
}

/// A notice named by `?m=` after a redirect.
pub(crate) fn notice(q: &Pairs) -> &'static str {
    match get(q, "m") {
        Some("created") => "The user was created.",
        Some("saved") => "Your changes were saved.",
        Some("columns") => "Your columns were saved.",
        Some("settings") => "The settings were saved.",
        Some("group") => "The group was created.",
        Some("members") => "The membership was changed.",
        Some("totp") => "Your authenticator is enrolled: sign-ins will ask for a code.",
        Some("totp-removed") => "Your authenticator was removed.",
        Some("enroll") => {
            "Multi-factor authentication is required for your account: enrol an authenticator app to continue."
        }
        _ => "",
    }
}

/// A local link to go back to, never another site.
pub(crate) fn back_link(s: Option<&str>, default: &str) -> String {
    match s {
        Some(b) if b.starts_with("/admin/") && !b.starts_with("//") && !b.contains("://") => b.to_string(),
        _ => default.to_string(),
    }
}

/// Percent-encodes a query value.
pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(crate) fn query_string(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}
