//! Grants (§2.2 Association, §3.1): a user reaches a resource only through an association
//! of JumpCloud's v2 graph, of the user itself or of one of its groups. Every change is one
//! transaction with its event; [`Directory::granted`] answers the access decision's `granted`.
//!
//! A kind of resource joins the graph by giving [`resource_name`] its lookup; the table, the
//! lists and the grant are shared.

use cairn_domain::graph::{GraphKind, GraphOp, ResourceKind, ResourceRef, SubjectKind, SubjectRef};
use cairn_domain::id::is_object_id;
use cairn_domain::{LdapServer, LdapServerAction};
use cairn_store::Db;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::{Ctx, Directory};

/// The name the built-in LDAP server is created with.
pub const BUILTIN_LDAP_SERVER_NAME: &str = "Cairn LDAP";

/// JumpCloud's `ldap-server` JSON.
pub fn ldap_server_json(s: &LdapServer) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "userLockoutAction": s.user_lockout_action.as_str(),
        "userPasswordExpirationAction": s.user_password_expiration_action.as_str(),
    })
}

fn no_such<K: GraphKind>(kind: K, id: &str) -> Error {
    Error::NotFound(format!("no {} with id '{id}'", kind.label()))
}

/// The event target of a subject (the kinds events already use: `user`, `group`) and its
/// name. `NotFound` when it does not exist; held against deletion until the transaction ends.
async fn subject_target(db: &mut Db<'_>, s: &SubjectRef) -> Result<(&'static str, String)> {
    if !is_object_id(&s.id) {
        return Err(no_such(s.kind, &s.id));
    }
    let name = db.subject_name(s).await?.ok_or_else(|| no_such(s.kind, &s.id))?;
    let kind = match s.kind {
        SubjectKind::User => "user",
        SubjectKind::UserGroup => "group",
    };
    Ok((kind, name))
}

/// The name of a resource; `NotFound` when it does not exist. A kind whose resources can be
/// deleted must hold the row here, as `Db::subject_name` does for subjects.
async fn resource_name(db: &mut Db<'_>, r: &ResourceRef) -> Result<String> {
    if !is_object_id(&r.id) {
        return Err(no_such(r.kind, &r.id));
    }
    match r.kind {
        // The one built-in server is never deleted.
        ResourceKind::LdapServer => Ok(db.get_ldap_server(&r.id).await?.ok_or_else(|| no_such(r.kind, &r.id))?.name),
        // Held until the transaction ends, so a deletion beside it removes what it adds.
        ResourceKind::RadiusServer => {
            Ok(db.get_radius_server(&r.id, true).await?.ok_or_else(|| no_such(r.kind, &r.id))?.name)
        }
        ResourceKind::Application => db.application_name_held(&r.id).await?.ok_or_else(|| no_such(r.kind, &r.id)),
    }
}

/// [`Directory::granted`] in the caller's transaction or connection.
pub(crate) async fn granted_in(db: &mut Db<'_>, user_id: &str, resource: &ResourceRef) -> Result<bool> {
    Ok(db.granted(user_id, resource).await?)
}

impl Directory {
    /// Ends the application tokens of users who no longer reach the application (an
    /// association or a membership went), and those users' portal sessions with them; the
    /// users whose access ended.
    pub(crate) async fn revoke_ungranted(
        &self,
        db: &mut Db<'_>,
        user: Option<&str>,
        app: Option<&str>,
    ) -> Result<Vec<String>> {
        let users = db.revoke_ungranted_oidc(user, app).await?;
        for u in &users {
            db.revoke_sessions(cairn_store::Account::User, u).await?;
        }
        Ok(users)
    }

    /// Adds or removes the association of `subject` with `resource`, and writes its event
    /// (`association_add` / `association_remove`, target the subject, detail the resource) in
    /// the same transaction. Returns whether the graph changed: adding an association that
    /// exists, or removing one that does not, is not an error and writes nothing. `NotFound`
    /// when either end does not exist.
    pub async fn associate(
        &self,
        ctx: &Ctx,
        subject: &SubjectRef,
        resource: &ResourceRef,
        op: GraphOp,
    ) -> Result<bool> {
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let (target_kind, target_name) = subject_target(&mut db, subject).await?;
        let resource_name = resource_name(&mut db, resource).await?;
        let (changed, action) = match op {
            GraphOp::Add => (db.add_association(subject, resource, self.now()).await?, "association_add"),
            GraphOp::Remove => (db.remove_association(subject, resource).await?, "association_remove"),
        };
        let mut detail_revoked = None;
        if changed && op == GraphOp::Remove && resource.kind == ResourceKind::Application {
            detail_revoked = Some(self.revoke_ungranted(&mut db, None, Some(&resource.id)).await?);
        }
        if changed {
            let detail = json!({
                "resource_type": resource.kind.as_str(), "resource_id": resource.id, "resource_name": resource_name,
            });
            let mut detail = detail;
            if let Some(users) = detail_revoked {
                detail["revoked_application_access"] = json!(users);
            }
            let ev = self.event(ctx, action, Some((target_kind, &subject.id, &target_name)), vec![], detail);
            db.insert_event(&ev).await?;
            tx.commit().await?;
        }
        Ok(changed)
    }

    /// The resources of the given kinds a user or group is associated with directly (JumpCloud
    /// `GET /users/{id}/associations`), by type and id, and how many in all. `NotFound` when
    /// the subject does not exist.
    pub async fn associations_of_subject(
        &self,
        subject: &SubjectRef,
        kinds: &[ResourceKind],
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<ResourceRef>)> {
        let mut c = self.store().read().await?;
        subject_target(&mut c.db(), subject).await?;
        Ok(c.db().resources_of(subject, kinds, limit, skip).await?)
    }

    /// The users and groups of the given kinds associated with a resource directly (JumpCloud
    /// `GET /ldapservers/{id}/associations`), and how many in all. `NotFound` when the resource
    /// does not exist.
    pub async fn associations_of_resource(
        &self,
        resource: &ResourceRef,
        kinds: &[SubjectKind],
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<SubjectRef>)> {
        let mut c = self.store().read().await?;
        resource_name(&mut c.db(), resource).await?;
        Ok(c.db().subjects_of(resource, kinds, limit, skip).await?)
    }

    /// The access decision's `granted` (§3.1): true when the user is associated with the
    /// resource directly or is a member of a group that is. One indexed query; false for a
    /// user or resource that does not exist. It says nothing about the user's state, password
    /// or lock: `authenticate` combines it with those through `cairn_domain::access::decide`.
    /// For an LDAP bind the resource is
    /// `ResourceRef::new(ResourceKind::LdapServer, dir.builtin_ldap_server().await?.id)`.
    pub async fn granted(&self, user_id: &str, resource: &ResourceRef) -> Result<bool> {
        let mut c = self.store().read().await?;
        granted_in(&mut c.db(), user_id, resource).await
    }

    /// JumpCloud `GET /ldapservers`: oldest first, and how many in all (one: the built-in).
    pub async fn ldap_servers(&self, limit: i64, skip: i64) -> Result<(i64, Vec<LdapServer>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().ldap_servers(limit, skip).await?)
    }

    pub async fn ldap_server(&self, id: &str) -> Result<LdapServer> {
        if !is_object_id(id) {
            return Err(no_such(ResourceKind::LdapServer, id));
        }
        let mut c = self.store().read().await?;
        c.db().get_ldap_server(id).await?.ok_or_else(|| no_such(ResourceKind::LdapServer, id))
    }

    /// JumpCloud `PATCH /ldapservers/{id}` (also `PUT`): `name`, `userLockoutAction` and
    /// `userPasswordExpirationAction` (`disable` or `remove`); any other field is refused by
    /// name, `id` may only repeat the server's. One transaction with its event.
    pub async fn update_ldap_server(&self, ctx: &Ctx, id: &str, patch: &Value) -> Result<LdapServer> {
        let Some(obj) = patch.as_object() else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        let mut errors = Vec::new();
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        if !is_object_id(id) {
            return Err(no_such(ResourceKind::LdapServer, id));
        }
        let old = db.lock_ldap_server(id).await?.ok_or_else(|| no_such(ResourceKind::LdapServer, id))?;
        let mut new = old.clone();
        for (k, v) in obj {
            match k.as_str() {
                "id" if v.as_str() == Some(id) => {}
                "id" => errors.push(cairn_domain::FieldError::new("id", "is the server's own and cannot change")),
                "name" => match v.as_str().map(str::trim) {
                    Some(n) if !n.is_empty() && n.chars().count() <= 256 && !n.contains('\0') => {
                        new.name = n.to_string()
                    }
                    _ => errors.push(cairn_domain::FieldError::new(
                        "name",
                        "must be a non-empty string of at most 256 characters",
                    )),
                },
                "userLockoutAction" | "userPasswordExpirationAction" => {
                    match v.as_str().and_then(LdapServerAction::parse) {
                        Some(a) if k == "userLockoutAction" => new.user_lockout_action = a,
                        Some(a) => new.user_password_expiration_action = a,
                        None => errors.push(cairn_domain::FieldError::new(k, "must be \"disable\" or \"remove\"")),
                    }
                }
                other => errors.push(cairn_domain::FieldError::new(
                    other,
                    "is not a field of an LDAP server (id, name, userLockoutAction, userPasswordExpirationAction)",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        if new != old {
            db.update_ldap_server(&new).await?;
            let before = ldap_server_json(&old);
            let after = ldap_server_json(&new);
            let changes = crate::json_changes("ldapserver", &before, &after);
            let ev = self.event(ctx, "ldapserver_update", Some(("ldap_server", id, &new.name)), changes, json!({}));
            db.insert_event(&ev).await?;
            tx.commit().await?;
        }
        Ok(new)
    }

    /// The built-in LDAP server (§2.2), the resource LDAP binds ask to be granted.
    pub async fn builtin_ldap_server(&self) -> Result<LdapServer> {
        let (_, servers) = self.ldap_servers(1, 0).await?;
        servers
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("the LDAP server is missing: run `cairn migrate`".into()))
    }

    /// Creates the built-in LDAP server unless it exists (at `migrate`, under its setup lock).
    pub(crate) async fn ensure_builtin_ldap_server(&self, db: &mut Db<'_>) -> Result<()> {
        if db.ldap_servers(1, 0).await?.0 == 0 {
            let s = LdapServer {
                id: self.new_id(),
                name: BUILTIN_LDAP_SERVER_NAME.into(),
                user_lockout_action: LdapServerAction::default(),
                user_password_expiration_action: LdapServerAction::default(),
                created: self.now(),
            };
            db.insert_ldap_server(&s).await?;
        }
        Ok(())
    }
}
