//! Settings › Service accounts: OAuth 2.0 client credentials for API automation. A new
//! account's client secret is shown on the page that creates it, once.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use cairn_domain::oauth::ServiceAccount;
use cairn_domain::Role;

use super::{notice, render, text, Chrome, Pairs, Signed};
use crate::Shared;

/// A secret shown this once.
struct Created {
    name: String,
    client_id: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "admin/service_accounts.html")]
struct Page<'a> {
    c: Chrome<'a>,
    accounts: Vec<ServiceAccount>,
    created: Option<Created>,
}

async fn show(st: &Shared, s: &Signed, note: &str, created: Option<Created>) -> Response {
    match st.dir.list_service_accounts().await {
        Ok(accounts) => s.html(render(&Page { c: s.chrome("service-accounts", note, ""), accounts, created })),
        Err(e) => s.fail(e),
    }
}

pub(super) async fn page(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let note = match super::get(&q, "m") {
        Some("revoked") => "The service account was deleted: its tokens no longer work.",
        _ => notice(&q),
    };
    show(&st, &s, note, None).await
}

pub(super) async fn create(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let role = match text(&form, "role").as_str() {
        "read-only" => Role::ReadOnly,
        _ => Role::Admin,
    };
    match st.dir.create_service_account(&s.ctx, &text(&form, "name"), role).await {
        Ok(new) => {
            let created = Created {
                name: new.account.name.clone(),
                client_id: new.account.client_id.clone(),
                secret: new.secret.expose().to_string(),
            };
            show(&st, &s, "The service account was created. Copy its secret now: it is not shown again.", Some(created))
                .await
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
    match st.dir.delete_service_account(&s.ctx, &id).await {
        Ok(_) => s.p.redirect("/admin/service-accounts?m=revoked"),
        Err(e) => s.fail(e),
    }
}
