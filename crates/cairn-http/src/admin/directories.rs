//! Directories (§7.1, §12): the upstream LDAP / Active Directory connections, one created or
//! edited through the same use cases as the REST API (the bind password written, never shown),
//! a sync started now (or previewed), and the last sync's status and counts.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use cairn_domain::dirsync::Connection;
use serde_json::{json, Map, Value};

use super::{get, notice, render, text, Chrome, Pairs, Signed};
use crate::Shared;

#[derive(Template)]
#[template(path = "admin/directories.html")]
struct ListPage<'a> {
    c: Chrome<'a>,
    connections: Vec<Connection>,
}

/// The last sync of a connection, as the page shows it.
struct LastSync {
    id: String,
    status: String,
    dry_run: bool,
    counts: String,
    message: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "admin/directory.html")]
struct DetailPage<'a> {
    c: Chrome<'a>,
    d: Connection,
    mapping: String,
    last: Option<LastSync>,
}

pub(super) async fn list(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let note = match get(&q, "m") {
        Some("deleted") => "The connection was deleted; the users and groups it created stay.",
        _ => notice(&q),
    };
    match st.dir.directory_connections(cairn_directory::MAX_CONNECTIONS, 0).await {
        Ok((_, connections)) => s.html(render(&ListPage { c: s.chrome("directories", note, ""), connections })),
        Err(e) => s.fail(e),
    }
}

/// The form's fields as the API's body: empty ones left out (a PUT keeps them), check boxes
/// and numbers typed.
fn body_of(form: &Pairs) -> Result<Map<String, Value>, String> {
    let mut b = Map::new();
    for k in [
        "name",
        "url",
        "caCert",
        "fingerprint",
        "bindDn",
        "bindPassword",
        "userBase",
        "userFilter",
        "groupBase",
        "groupFilter",
        "preset",
        "passwordAuthority",
    ] {
        let v = text(form, k);
        if !v.is_empty() {
            b.insert(k.into(), json!(v));
        }
    }
    b.insert("startTls".into(), json!(get(form, "startTls") == Some("yes")));
    let iv = text(form, "syncIntervalSeconds");
    if !iv.is_empty() {
        let n: i64 = iv.trim().parse().map_err(|_| "syncIntervalSeconds must be a number of seconds".to_string())?;
        b.insert("syncIntervalSeconds".into(), json!(n));
    }
    let m = text(form, "attributeMapping");
    if !m.trim().is_empty() {
        let v: Value = serde_json::from_str(&m).map_err(|e| format!("attributeMapping is not JSON: {e}"))?;
        b.insert("attributeMapping".into(), v);
    }
    Ok(b)
}

pub(super) async fn create(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let body = match body_of(&form) {
        Ok(b) => b,
        Err(m) => return s.fail(cairn_directory::Error::invalid("body", m)),
    };
    match st.dir.create_directory_connection(&s.ctx, &Value::Object(body)).await {
        Ok(c) => s.p.redirect(&format!("/admin/directories/{}?m=created", c.id)),
        Err(e) => s.fail(e),
    }
}

pub(super) async fn details(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Query(q): Query<Pairs>,
) -> Response {
    let d = match st.dir.directory_connection(&id).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let last = match &d.last_job {
        Some(j) => match st.dir.directory_sync_job(&d.id, j).await {
            Ok(j) => Some(LastSync {
                id: j.id.clone(),
                status: j.status.clone(),
                dry_run: j.params["dry_run"] == json!(true),
                counts: j
                    .counts
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                message: j.message.clone().unwrap_or_default(),
                updated: j.updated.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            }),
            Err(_) => None,
        },
        None => None,
    };
    let note = match get(&q, "m") {
        Some("created") => "The connection was created. Preview a sync, then run it.",
        Some("saved") => "The connection's settings were saved.",
        Some("sync") => "The sync started; reload to follow it.",
        _ => notice(&q),
    };
    let mapping = serde_json::to_string(&d.mapping_overrides).unwrap_or_default();
    s.html(render(&DetailPage { c: s.chrome("directories", note, ""), d, mapping, last }))
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
    let body = match body_of(&form) {
        Ok(b) => b,
        Err(m) => return s.fail(cairn_directory::Error::invalid("body", m)),
    };
    match st.dir.update_directory_connection(&s.ctx, &id, &Value::Object(body)).await {
        Ok(_) => s.p.redirect(&format!("/admin/directories/{id}?m=saved")),
        Err(e) => s.fail(e),
    }
}

pub(super) async fn sync(
    State(st): State<Shared>,
    s: Signed,
    Path(id): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let dry_run = get(&form, "dry_run") == Some("yes");
    match st.dir.start_directory_sync(&s.ctx, &id, dry_run).await {
        Ok(_) => s.p.redirect(&format!("/admin/directories/{id}?m=sync")),
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
    match st.dir.delete_directory_connection(&s.ctx, &id).await {
        Ok(_) => s.p.redirect("/admin/directories?m=deleted"),
        Err(e) => s.fail(e),
    }
}
