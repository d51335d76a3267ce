//! RADIUS (§7.1, §11): the RADIUS servers (the NAS address ranges that may ask), one created
//! with its shared secret generated or given and shown once, and per server its MFA, its
//! actions for locked users and expired passwords, and its associated groups and users.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use cairn_domain::graph::{ResourceKind, ResourceRef};
use cairn_domain::radius::RadiusServer;
use serde_json::{json, Map, Value};

use super::ldap::{associated, change_association, Subject};
use super::{get, notice, render, text, Chrome, Pairs, Signed};
use crate::Shared;

/// A server just created, with the secret shown this once.
struct Created {
    name: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "admin/radius.html")]
struct ListPage<'a> {
    c: Chrome<'a>,
    servers: Vec<RadiusServer>,
    listener: Option<String>,
    created: Option<Created>,
}

#[derive(Template)]
#[template(path = "admin/radius_server.html")]
struct ServerPage<'a> {
    c: Chrome<'a>,
    server: RadiusServer,
    listener: Option<String>,
    groups: Vec<Subject>,
    users: Vec<Subject>,
    total: i64,
    grant_action: String,
    example: String,
}

async fn show_list(st: &Shared, s: &Signed, note: &str, created: Option<Created>) -> Response {
    match st.dir.radius_servers(cairn_directory::MAX_RADIUS_SERVERS, 0).await {
        Ok((_, servers)) => {
            let listener = st.radius_addr.clone();
            s.html(render(&ListPage { c: s.chrome("radius", note, ""), servers, listener, created }))
        }
        Err(e) => s.fail(e),
    }
}

pub(super) async fn list(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let note = match get(&q, "m") {
        Some("deleted") => "The RADIUS server was deleted: its devices get no answer now.",
        _ => notice(&q),
    };
    show_list(&st, &s, note, None).await
}

/// The settings fields of the forms, as the API's body (empty ones left out).
fn body_of(form: &Pairs) -> Map<String, Value> {
    let mut b = Map::new();
    for k in ["name", "networkSourceIp", "sharedSecret", "mfa", "userLockoutAction", "userPasswordExpirationAction"] {
        let v = text(form, k);
        if !v.is_empty() {
            b.insert(k.into(), json!(v));
        }
    }
    b
}

pub(super) async fn create(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let mut body = body_of(&form);
    // Left empty: one generated, which every NAS accepts.
    let secret = match body.get("sharedSecret").and_then(Value::as_str) {
        Some(given) => given.to_string(),
        None => cairn_directory::generate_shared_secret(),
    };
    body.insert("sharedSecret".into(), json!(secret));
    match st.dir.create_radius_server(&s.ctx, &Value::Object(body)).await {
        Ok(server) => {
            let created = Created { name: server.name, secret };
            let note = "The RADIUS server was created. Copy its shared secret now: it is not shown again.";
            show_list(&st, &s, note, Some(created)).await
        }
        Err(e) => s.fail(e),
    }
}

pub(super) async fn details(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    let server = match st.dir.radius_server(&id).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let r = ResourceRef::new(ResourceKind::RadiusServer, server.id.clone());
    let (total, groups, users) = match associated(&st, &r).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let listener = st.radius_addr.clone();
    let example = match &listener {
        Some(a) => format!(
            "echo 'User-Name = \"YOUR-USERNAME\", User-Password = \"YOUR-PASSWORD\", Message-Authenticator = 0x00' \
             | radclient -x {a} auth 'THE-SHARED-SECRET'"
        ),
        None => String::new(),
    };
    let note = match get(&q, "m") {
        Some("saved") => "The RADIUS server's settings were saved.",
        Some("grant") => "The RADIUS server's associations were changed.",
        _ => notice(&q),
    };
    let grant_action = format!("/admin/radius/{}/associations", server.id);
    s.html(render(&ServerPage {
        c: s.chrome("radius", note, ""),
        server,
        listener,
        groups,
        users,
        total,
        grant_action,
        example,
    }))
}

/// Saves the settings; a shared secret typed in replaces the old one.
pub(super) async fn save(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    match st.dir.update_radius_server(&s.ctx, &id, &Value::Object(body_of(&form))).await {
        Ok(_) => s.p.redirect(&format!("/admin/radius/{id}?m=saved")),
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
    let r = ResourceRef::new(ResourceKind::RadiusServer, id.clone());
    change_association(&st, &s, &form, &r, &format!("/admin/radius/{id}?m=grant")).await
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
    match st.dir.delete_radius_server(&s.ctx, &id).await {
        Ok(_) => s.p.redirect("/admin/radius?m=deleted"),
        Err(e) => s.fail(e),
    }
}
