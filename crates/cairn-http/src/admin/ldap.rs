//! LDAP (§7.1): the built-in LDAP server, where it listens, what it does with locked users
//! and expired passwords, the groups and users associated with it (who is in the tree and may
//! bind), and the `ldapsearch` line to try it.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Form;
use cairn_domain::graph::{GraphOp, ResourceKind, ResourceRef, SubjectKind, SubjectRef};
use cairn_domain::LdapServer;
use serde_json::json;

use super::{get, notice, render, text, Chrome, Pairs, Signed};
use crate::Shared;

/// A user or group associated with a resource, as the association tables show it.
pub(super) struct Subject {
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub link: String,
}

/// The groups and the users associated with `r` (the first 500), and how many in all.
pub(super) async fn associated(
    st: &Shared,
    r: &ResourceRef,
) -> Result<(i64, Vec<Subject>, Vec<Subject>), cairn_directory::Error> {
    let (total, subjects) =
        st.dir.associations_of_resource(r, &[SubjectKind::UserGroup, SubjectKind::User], 500, 0).await?;
    let (mut groups, mut users) = (vec![], vec![]);
    for sub in subjects {
        match sub.kind {
            SubjectKind::UserGroup => {
                if let Ok(g) = st.dir.get_group(&sub.id).await {
                    groups.push(Subject {
                        kind: "user_group",
                        link: format!("/admin/groups/{}", g.id),
                        id: g.id,
                        name: g.name,
                    });
                }
            }
            SubjectKind::User => {
                if let Ok(u) = st.dir.get_user(&sub.id).await {
                    users.push(Subject {
                        kind: "user",
                        link: format!("/admin/users/{}", u.id),
                        id: u.id,
                        name: u.username,
                    });
                }
            }
        }
    }
    Ok((total, groups, users))
}

/// What an association form asks: add a group (by name) or a user (by username or e-mail),
/// or remove one (by id).
pub(super) async fn form_operation(st: &Shared, form: &Pairs) -> Result<(GraphOp, SubjectRef), cairn_directory::Error> {
    let op = if get(form, "op") == Some("remove") { GraphOp::Remove } else { GraphOp::Add };
    let kind = if get(form, "type") == Some("user") { SubjectKind::User } else { SubjectKind::UserGroup };
    let id = match (op, kind) {
        (GraphOp::Remove, _) => text(form, "id"),
        (GraphOp::Add, SubjectKind::UserGroup) => {
            let name = text(form, "name");
            match st.dir.list_groups(Some(&name), 1, 0).await? {
                (_, g) if !g.is_empty() => g[0].id.clone(),
                _ => return Err(cairn_directory::Error::NotFound(format!("no group named '{name}'"))),
            }
        }
        (GraphOp::Add, SubjectKind::User) => {
            let who = text(form, "name");
            let field = if who.contains('@') { "email" } else { "username" };
            let found = match cairn_domain::query::ListQuery::from_pairs(&[
                ("filter".into(), format!("{field}:$eq:{who}")),
                ("limit".into(), "1".into()),
            ]) {
                Ok(q) => st.dir.list_users(&q).await.ok().and_then(|(_, u)| u.into_iter().next()),
                Err(_) => None,
            };
            match found {
                Some(u) => u.id,
                None => return Err(cairn_directory::Error::NotFound(format!("no user with {field} '{who}'"))),
            }
        }
    };
    Ok((op, SubjectRef { kind, id }))
}

#[derive(Template)]
#[template(path = "admin/ldap.html")]
struct LdapPage<'a> {
    c: Chrome<'a>,
    server: LdapServer,
    listing: Option<crate::LdapListing>,
    groups: Vec<Subject>,
    users: Vec<Subject>,
    total: i64,
    example: String,
    grant_action: &'static str,
}

pub(super) async fn page(State(st): State<Shared>, s: Signed, Query(q): Query<Pairs>) -> Response {
    let server = match st.dir.builtin_ldap_server().await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let r = ResourceRef::new(ResourceKind::LdapServer, server.id.clone());
    let (total, groups, users) = match associated(&st, &r).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let listing = st.ldap.clone();
    let example = match &listing {
        Some(l) => {
            let url = l.ldap_url.clone().or_else(|| l.ldaps_url.clone()).unwrap_or_default();
            format!(
                "ldapsearch -x -H {url} -D \"uid=YOUR-USERNAME,ou=Users,{b}\" -W -b \"{b}\" \"(uid=YOUR-USERNAME)\"",
                b = l.base_dn
            )
        }
        None => String::new(),
    };
    let m = match get(&q, "m") {
        Some("ldap-saved") => "The LDAP server's settings were saved.",
        Some("ldap-grant") => "The LDAP server's associations were changed.",
        _ => notice(&q),
    };
    let grant_action = "/admin/ldap/associations";
    let body =
        render(&LdapPage { c: s.chrome("ldap", m, ""), server, listing, groups, users, total, example, grant_action });
    s.html(body)
}

/// Saves the lockout and expiration actions.
pub(super) async fn save(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let server = match st.dir.builtin_ldap_server().await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let patch = json!({
        "userLockoutAction": text(&form, "userLockoutAction"),
        "userPasswordExpirationAction": text(&form, "userPasswordExpirationAction"),
    });
    match st.dir.update_ldap_server(&s.ctx, &server.id, &patch).await {
        Ok(_) => s.p.redirect("/admin/ldap?m=ldap-saved"),
        Err(e) => s.fail(e),
    }
}

/// Associates a group (by name) or a user (by username or e-mail), or removes one (by id).
pub(super) async fn grant(State(st): State<Shared>, s: Signed, Form(form): Form<Pairs>) -> Response {
    if let Some(r) = s.may_change(&form) {
        return r;
    }
    let server = match st.dir.builtin_ldap_server().await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    let r = ResourceRef::new(ResourceKind::LdapServer, server.id);
    change_association(&st, &s, &form, &r, "/admin/ldap?m=ldap-grant").await
}

/// The association form of a resource's page (an application's): the change `form` asks,
/// then to `done`.
pub(super) async fn change_association(st: &Shared, s: &Signed, form: &Pairs, r: &ResourceRef, done: &str) -> Response {
    let (op, subject) = match form_operation(st, form).await {
        Ok(x) => x,
        Err(e) => return s.fail(e),
    };
    match st.dir.associate(&s.ctx, &subject, r, op).await {
        Ok(_) => s.p.redirect(done),
        Err(e) => s.fail(e),
    }
}
