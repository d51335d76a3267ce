//! Applications (§7): OpenID Connect relying parties. The list with a create form (a
//! confidential client's secret is shown on the page that creates or rotates it, once), each
//! application's page to edit it, rotate its secret, delete it, and associate groups and users.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use cairn_directory::NewApplication;
use cairn_domain::application::Application;
use cairn_domain::graph::{ResourceKind, ResourceRef};
use serde_json::{json, Value};

use super::ldap::{associated, change_association, Subject};
use super::{get, notice, render, text, Chrome, Pairs, Signed};
use crate::Shared;

/// A secret shown this once.
struct Created {
    name: String,
    client_id: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "admin/applications.html")]
struct ListPage<'a> {
    c: Chrome<'a>,
    apps: Vec<Application>,
    total: i64,
    created: Option<Created>,
    issuer: &'a str,
}

#[derive(Template)]
#[template(path = "admin/application.html")]
struct AppPage<'a> {
    c: Chrome<'a>,
    app: Application,
    redirect_uris: String,
    logout_uris: String,
    groups: Vec<Subject>,
    users: Vec<Subject>,
    total: i64,
    created: Option<Created>,
    issuer: &'a str,
    grant_action: String,
}

fn created(new: &NewApplication) -> Option<Created> {
    new.secret.as_ref().map(|s| Created {
        name: new.application.name.clone(),
        client_id: new.application.client_id.clone(),
        secret: s.expose().to_string(),
    })
}

/// One URI a line.
fn lines(form: &Pairs, k: &str) -> Value {
    json!(text(form, k).lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>())
}

fn checked(form: &Pairs, k: &str) -> bool {
    get(form, k).is_some()
}

async fn show_list(st: &Shared, s: &Signed, note: &str, created: Option<Created>) -> Response {
    match st.dir.list_applications(1000, 0).await {
        Ok((total, apps)) => s.html(render(&ListPage {
            c: s.chrome("applications", note, ""),
            apps,
            total,
            created,
            issuer: st.dir.config().issuer(),
        })),
        Err(e) => s.fail(e),
    }
}

pub(super) async fn list(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let note = match get(&q, "m") {
        Some("deleted") => "The application was deleted: its tokens no longer work.",
        _ => notice(&q),
    };
    show_list(&st, &s, note, None).await
}

pub(super) async fn create(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let body = json!({
        "name": text(&form, "name"),
        "sso": { "type": "oidc" },
        "redirectUris": lines(&form, "redirectUris"),
        "public": checked(&form, "public"),
        "requireMfa": checked(&form, "requireMfa"),
    });
    match st.dir.create_application(&s.ctx, &body).await {
        Ok(new) => {
            let note = match new.secret {
                Some(_) => "The application was created. Copy its client secret now: it is not shown again.",
                None => "The application was created (a public client: no secret; it must use PKCE).",
            };
            let c = created(&new);
            show_app(&st, &s, &new.application.id, note, c).await
        }
        Err(e) => s.fail(e),
    }
}

async fn show_app(st: &Shared, s: &Signed, id: &str, note: &str, created: Option<Created>) -> Response {
    let app = match st.dir.application(id).await {
        Ok(a) => a,
        Err(e) => return s.fail(e),
    };
    let r = ResourceRef::new(ResourceKind::Application, app.id.clone());
    let (total, groups, users) = match associated(st, &r).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    s.html(render(&AppPage {
        c: s.chrome("applications", note, ""),
        grant_action: format!("/admin/applications/{}/associations", app.id),
        redirect_uris: app.settings.redirect_uris.join("\n"),
        logout_uris: app.settings.post_logout_redirect_uris.join("\n"),
        app,
        groups,
        users,
        total,
        created,
        issuer: st.dir.config().issuer(),
    }))
}

pub(super) async fn page(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    let note = match get(&q, "m") {
        Some("saved") => "The application was saved.",
        Some("grant") => "The application's associations were changed.",
        _ => notice(&q),
    };
    show_app(&st, &s, &id, note, None).await
}

pub(super) async fn save(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let body = json!({
        "name": text(&form, "name"),
        "displayLabel": text(&form, "displayLabel"),
        "description": text(&form, "description"),
        "redirectUris": lines(&form, "redirectUris"),
        "postLogoutRedirectUris": lines(&form, "postLogoutRedirectUris"),
        "active": checked(&form, "active"),
        "requireMfa": checked(&form, "requireMfa"),
        "idTokenSignedResponseAlg": text(&form, "idTokenSignedResponseAlg"),
    });
    match st.dir.update_application(&s.ctx, &id, &body).await {
        Ok(_) => s.p.redirect(&format!("/admin/applications/{id}?m=saved")),
        Err(e) => s.fail(e),
    }
}

pub(super) async fn rotate(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    match st.dir.rotate_application_secret(&s.ctx, &id).await {
        Ok(new) => {
            let note = "A new client secret was made; the old one no longer works. Copy it now: it is not shown again.";
            show_app(&st, &s, &id, note, created(&new)).await
        }
        Err(e) => s.fail(e),
    }
}

pub(super) async fn delete(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    match st.dir.delete_application(&s.ctx, &id).await {
        Ok(_) => s.p.redirect("/admin/applications?m=deleted"),
        Err(e) => s.fail(e),
    }
}

pub(super) async fn grant(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let r = ResourceRef::new(ResourceKind::Application, id.clone());
    change_association(&st, &s, &form, &r, &format!("/admin/applications/{id}?m=grant")).await
}
