//! SCIM 2.0 use cases (§9): bearer tokens for identity providers, and user and group changes
//! that go through the same methods as every other interface, so the lifecycle rules, the mail
//! rules and the audit log apply unchanged. Every event carries the caller's source (`scim`).

use cairn_domain::lifecycle::MailChoice;
use cairn_domain::scim::{AttrPath, Filter};
use cairn_domain::user::{normalize_username, Change, UserInput};
use cairn_domain::{Actor, CreationSource, PasswordAuthority, Secret, State, User};
use cairn_domain::{ScimGroupRow, ScimToken, ScimUserRow};
use cairn_store::{scim_group_where, scim_user_where};
use rand::RngCore;
use serde_json::json;

use crate::error::{Error, Result};
use crate::keys::hash_key;
use crate::{Ctx, Directory};

/// A SCIM token as shown once at creation.
/// A SCIM list request: the domain's filter tree, which the store translates to bound SQL.
#[derive(Debug, Clone, Copy)]
pub struct ScimQuery<'a> {
    pub filter: Option<&'a Filter>,
    pub sort_by: Option<&'a AttrPath>,
    pub descending: bool,
    /// 0-based offset (SCIM's `startIndex` - 1).
    pub start: i64,
    pub count: i64,
}

pub struct NewScimToken {
    pub token: ScimToken,
    pub secret: Secret,
}

/// What a SCIM create or replace asks of a user, beyond the JumpCloud-shaped `input`.
#[derive(Debug, Default, Clone)]
pub struct ScimUserChange {
    /// Profile fields (and `email`); on replace every SCIM-mapped field is present, `Null`
    /// clearing it.
    pub input: UserInput,
    /// The provider's `userName`, as sent.
    pub user_name: Option<String>,
    pub external_id: Option<Option<String>>,
    pub active: Option<bool>,
    pub password: Option<Secret>,
}

/// A group change: name, externalId, and the complete member list when given.
#[derive(Debug, Default, Clone)]
pub struct ScimGroupChange {
    pub display_name: Option<String>,
    pub external_id: Option<Option<String>>,
    pub members: Option<Vec<String>>,
}

fn generate_token() -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    format!("cairn_scim_{}", hex::encode(b))
}

/// The Cairn username for a SCIM `userName`, and whether the `userName` must be kept beside
/// it (when it is not itself a valid username, e.g. an e-mail address).
fn username_for(user_name: &str) -> Result<(String, bool)> {
    let trimmed = user_name.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid("userName", "must not be empty"));
    }
    if trimmed.chars().count() > 256 {
        return Err(Error::invalid("userName", "must be at most 256 characters"));
    }
    if let Ok(u) = normalize_username(trimmed) {
        if u == trimmed && cairn_domain::user::check_new_username(&u).is_ok() {
            return Ok((u, false));
        }
    }
    Ok((sanitize(trimmed), true))
}

fn sanitize(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') { c } else { '.' })
        .collect();
    // A username starts with a letter.
    while out.starts_with(|c: char| !c.is_ascii_lowercase()) {
        out.remove(0);
    }
    if out.is_empty() {
        out = "user".into();
    }
    out.chars().take(64).collect()
}

impl Directory {
    // ---- tokens -------------------------------------------------------------------------

    pub async fn create_scim_token(&self, ctx: &Ctx, name: &str) -> Result<NewScimToken> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 255 {
            return Err(Error::invalid("name", "must be 1 to 255 characters"));
        }
        let secret = generate_token();
        let token = ScimToken {
            id: self.new_id(),
            name: name.to_string(),
            token_hash: hash_key(&secret),
            prefix: secret.chars().take(15).collect(),
            created: self.now(),
            created_by: ctx.actor.name.clone(),
            last_used: None,
        };
        let mut tx = self.store().begin().await?;
        tx.db().insert_scim_token(&token).await?;
        let ev = self.event(
            ctx,
            "scim_token_create",
            Some(("scim_token", &token.id, &token.name)),
            vec![],
            json!({ "prefix": token.prefix }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(NewScimToken { token, secret: Secret::new(secret) })
    }

    pub async fn list_scim_tokens(&self) -> Result<Vec<ScimToken>> {
        let mut c = self.store().read().await?;
        Ok(c.db().list_scim_tokens().await?)
    }

    pub async fn delete_scim_token(&self, ctx: &Ctx, id: &str) -> Result<ScimToken> {
        let mut tx = self.store().begin().await?;
        let t = tx
            .db()
            .get_scim_token(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no SCIM token with id '{id}'")))?;
        tx.db().delete_scim_token(id).await?;
        let ev = self.event(ctx, "scim_token_delete", Some(("scim_token", &t.id, &t.name)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(t)
    }

    /// The SCIM token that `presented` is, if any (API keys are not SCIM tokens). `last used`
    /// is written at most once a minute.
    pub async fn authenticate_scim_token(&self, presented: &str) -> Result<Option<ScimToken>> {
        let mut c = self.store().read().await?;
        let Some(t) = c.db().scim_token_by_hash(&hash_key(presented)).await? else {
            return Ok(None);
        };
        drop(c);
        let now = self.now();
        if t.last_used.is_none_or(|u| (now - u).num_seconds() >= 60) {
            let mut tx = self.store().begin().await?;
            tx.db().touch_scim_token(&t.id, now).await?;
            tx.commit_unlogged().await?;
        }
        Ok(Some(t))
    }

    /// The actor a SCIM token acts as.
    pub fn scim_actor(t: &ScimToken) -> Actor {
        Actor { kind: "scim_token".into(), id: Some(t.id.clone()), name: Some(t.name.clone()) }
    }

    // ---- users --------------------------------------------------------------------------

    pub async fn scim_user(&self, id: &str) -> Result<ScimUserRow> {
        let mut c = self.store().read().await?;
        if !cairn_domain::id::is_object_id(id) {
            return Err(Error::NotFound(format!("no user with id '{id}'")));
        }
        c.db().scim_user(id).await?.ok_or_else(|| Error::NotFound(format!("no user with id '{id}'")))
    }

    /// A page of users matching a SCIM filter, sorted by `sort_by` (RFC 7644 §3.4.2).
    pub async fn scim_list_users(&self, q: &ScimQuery<'_>) -> Result<(i64, Vec<ScimUserRow>)> {
        let w = scim_user_where(q.filter, q.sort_by, q.descending).map_err(Error::Filter)?;
        let mut c = self.store().read().await?;
        Ok(c.db().scim_list_users(&w, q.start, q.count).await?)
    }

    /// `(id, name)` of each group of a user.
    pub async fn scim_user_groups(&self, id: &str) -> Result<Vec<(String, String)>> {
        let mut c = self.store().read().await?;
        Ok(c.db().scim_user_groups(id).await?)
    }

    async fn check_scim_name(&self, user_name: &str, except: Option<&str>) -> Result<(String, Option<String>)> {
        let (mut username, keep) = username_for(user_name)?;
        let mut c = self.store().read().await?;
        if let Some(other) = c.db().scim_user_by_name(user_name).await? {
            if Some(other.user.id.as_str()) != except {
                return Err(Error::Conflict(format!("a user with userName '{user_name}' already exists")));
            }
        }
        if keep {
            // Prefer the local part of an address; fall back to the whole name when taken.
            let local = sanitize(user_name.split('@').next().unwrap_or(user_name));
            let taken = |u: Option<User>| u.is_some_and(|u| Some(u.id.as_str()) != except);
            username = if !taken(c.db().user_by_username(&local).await?) { local } else { username };
        }
        Ok((username, keep.then(|| user_name.trim().to_string())))
    }

    /// Creates a user: STAGED when `active` is false, else the `manualEntry` default (§9).
    pub async fn scim_create_user(&self, ctx: &Ctx, change: ScimUserChange) -> Result<ScimUserRow> {
        let user_name = change.user_name.clone().ok_or_else(|| Error::invalid("userName", "is required"))?;
        let (username, keep) = self.check_scim_name(&user_name, None).await?;
        let mut input = change.input;
        input.username = Some(username);
        if input.email.is_none() {
            return Err(Error::invalid("emails", "Cairn needs an e-mail address for every user"));
        }
        if change.active == Some(false) {
            input.state = Some(State::Staged);
        }
        if change.password.is_some() {
            let org = self.organization().await?;
            if org.settings.default_password_authority() == Some(PasswordAuthority::ActiveDirectory) {
                return Err(Error::Forbidden("new users' passwords are held by Active Directory".into()));
            }
        }
        let org = self.organization().await?;
        let hash = self.checked_hash(&org, change.password.as_ref()).await?;
        input.password = None;
        let user = self.new_user(&org, input, CreationSource::ManualEntry, "scim", hash, self.now())?;
        // The user and its SCIM columns in one transaction: all of the request or none.
        let mut tx = self.store().begin().await?;
        self.insert_new_user(&mut tx.db(), ctx, &user, "scim", &MailChoice::Default).await?;
        let ext = change.external_id.flatten();
        if ext.is_some() || keep.is_some() {
            self.write_scim_columns(&mut tx.db(), ctx, &user, None, ext.as_deref(), keep.as_deref()).await?;
        }
        tx.commit().await?;
        self.scim_user(&user.id).await
    }

    async fn write_scim_columns(
        &self,
        db: &mut cairn_store::Db<'_>,
        ctx: &Ctx,
        user: &User,
        old: Option<&ScimUserRow>,
        ext: Option<&str>,
        user_name: Option<&str>,
    ) -> Result<()> {
        db.set_scim_user_columns(&user.id, ext, user_name).await?;
        let mut changes = vec![];
        let old_ext = old.and_then(|o| o.external_id.clone());
        if old_ext.as_deref() != ext {
            changes.push(Change { field: "externalId".into(), old: json!(old_ext), new: json!(ext) });
        }
        let old_name = old.and_then(|o| o.user_name.clone());
        if old_name.as_deref() != user_name {
            changes.push(Change { field: "scimUserName".into(), old: json!(old_name), new: json!(user_name) });
        }
        if !changes.is_empty() {
            let ev = self.event(ctx, "user_update", Some(("user", &user.id, &user.username)), changes, json!({}));
            db.insert_event(&ev).await?;
        }
        Ok(())
    }

    /// Applies a SCIM replace (PUT, or PATCH already applied to the resource): profile
    /// fields through `update_user_from`, `active` through activate / suspend, `password` only
    /// where the user's authority is SCIM or none.
    pub async fn scim_update_user(&self, ctx: &Ctx, id: &str, change: ScimUserChange) -> Result<ScimUserRow> {
        let old = self.scim_user(id).await?;
        let mut input = change.input;
        let mut keep = old.user_name.clone();
        if let Some(n) = &change.user_name {
            let current = old.user_name.clone().unwrap_or_else(|| old.user.username.clone());
            if n.trim() != current {
                let (username, k) = self.check_scim_name(n, Some(id)).await?;
                if username != old.user.username {
                    input.username = Some(username);
                }
                keep = k;
            }
        }
        if let Some(pw) = &change.password {
            self.scim_check_password(&old.user, pw)?;
        }
        input.password = change.password;
        // `active` is the lifecycle: true activates, false suspends an active user (a staged
        // user stays staged until an admin activates it).
        input.state = match change.active {
            Some(true) => Some(State::Activated),
            Some(false) if old.user.state == State::Activated => Some(State::Suspended),
            _ => None,
        };
        input.suspended = None;
        // Profile, password, state and SCIM columns in one transaction: all or nothing.
        let mut tx = self.store().begin().await?;
        let (user, mut changed) = self.update_user_in(&mut tx.db(), ctx, id, input, true).await?;
        let ext = change.external_id.unwrap_or(old.external_id.clone());
        if ext != old.external_id || keep != old.user_name {
            self.write_scim_columns(&mut tx.db(), ctx, &user, Some(&old), ext.as_deref(), keep.as_deref()).await?;
            changed = true;
        }
        if changed {
            tx.commit().await?;
        }
        self.scim_user(id).await
    }

    fn scim_check_password(&self, user: &User, _pw: &Secret) -> Result<()> {
        match user.password_authority() {
            None | Some(PasswordAuthority::Scim) => Ok(()),
            Some(a) => Err(Error::Forbidden(format!(
                "the password of {} is held by {} and cannot be set through SCIM",
                user.username,
                a.as_str()
            ))),
        }
    }

    // ---- groups -------------------------------------------------------------------------

    pub async fn scim_group(&self, id: &str) -> Result<ScimGroupRow> {
        if !cairn_domain::id::is_object_id(id) {
            return Err(Error::NotFound(format!("no group with id '{id}'")));
        }
        let mut c = self.store().read().await?;
        c.db().scim_group(id).await?.ok_or_else(|| Error::NotFound(format!("no group with id '{id}'")))
    }

    /// As `scim_list_users`, for groups.
    pub async fn scim_list_groups(&self, q: &ScimQuery<'_>) -> Result<(i64, Vec<ScimGroupRow>)> {
        let w = scim_group_where(q.filter, q.sort_by, q.descending).map_err(Error::Filter)?;
        let mut c = self.store().read().await?;
        Ok(c.db().scim_list_groups(&w, q.start, q.count).await?)
    }

    /// `(user id, display)` of every member.
    pub async fn scim_group_members(&self, id: &str) -> Result<Vec<(String, String)>> {
        let mut c = self.store().read().await?;
        Ok(c.db().scim_group_members(id).await?)
    }

    /// Splits members into users that exist and ids that name no user. Identity providers
    /// expect a membership PATCH naming an unknown id to succeed (scim-sanity's probe does);
    /// the unknown ids are left out and recorded in the event log instead, not lost silently.
    async fn known_members(&self, members: &[String]) -> Result<(Vec<String>, Vec<String>)> {
        let mut c = self.store().read().await?;
        let valid: Vec<String> = members.iter().filter(|m| cairn_domain::id::is_object_id(m)).cloned().collect();
        let found = c.db().existing_user_ids(&valid).await?;
        Ok(members.iter().cloned().partition(|m| found.contains(m)))
    }

    fn ignored_members_event(&self, ctx: &Ctx, group_id: &str, name: &str, unknown: &[String]) -> cairn_domain::Event {
        let detail = json!({ "ignored_member_ids": unknown, "reason": "no user has these ids" });
        let mut ev = self.event(ctx, "group_member_ignored", Some(("group", group_id, name)), vec![], detail);
        ev.outcome = "skipped".into();
        ev
    }

    pub async fn scim_create_group(&self, ctx: &Ctx, change: ScimGroupChange) -> Result<ScimGroupRow> {
        let name = change.display_name.clone().ok_or_else(|| Error::invalid("displayName", "is required"))?;
        let members = match &change.members {
            Some(m) => Some(self.known_members(m).await?),
            None => None,
        };
        // The group, its external id and its members in one transaction.
        let mut tx = self.store().begin().await?;
        let g = self.create_group_in(&mut tx.db(), ctx, &json!({ "name": name })).await?;
        if let Some(ext) = change.external_id.clone().flatten() {
            tx.db().set_scim_group_external_id(&g.id, Some(&ext)).await?;
        }
        if let Some((known, unknown)) = members {
            self.set_members(&mut tx.db(), ctx, &g.id, &known).await?;
            if !unknown.is_empty() {
                tx.db().insert_event(&self.ignored_members_event(ctx, &g.id, &g.name, &unknown)).await?;
            }
        }
        tx.commit().await?;
        self.scim_group(&g.id).await
    }

    /// Brings the members to exactly `members`, one membership change (and event) each, in the
    /// caller's transaction.
    async fn set_members(
        &self,
        db: &mut cairn_store::Db<'_>,
        ctx: &Ctx,
        group_id: &str,
        members: &[String],
    ) -> Result<()> {
        let current: Vec<String> = db.scim_group_members(group_id).await?.into_iter().map(|m| m.0).collect();
        let mut changed = false;
        for m in members {
            if !current.contains(m) {
                changed |= self.change_membership_in(db, ctx, group_id, m, true).await?;
            }
        }
        for m in &current {
            if !members.contains(m) {
                changed |= self.change_membership_in(db, ctx, group_id, m, false).await?;
            }
        }
        if changed {
            db.touch_group(group_id, self.now()).await?;
        }
        Ok(())
    }

    pub async fn scim_update_group(&self, ctx: &Ctx, id: &str, change: ScimGroupChange) -> Result<ScimGroupRow> {
        let old = self.scim_group(id).await?;
        let members = match &change.members {
            Some(m) => Some(self.known_members(m).await?),
            None => None,
        };
        // Name, external id and members in one transaction.
        let mut tx = self.store().begin().await?;
        if let Some(n) = &change.display_name {
            if n != &old.group.name {
                self.update_group_in(&mut tx.db(), ctx, id, &json!({ "name": n })).await?;
            }
        }
        if let Some(ext) = &change.external_id {
            if ext != &old.external_id {
                tx.db().set_scim_group_external_id(id, ext.as_deref()).await?;
                tx.db().touch_group(id, self.now()).await?;
                let changes = vec![Change { field: "externalId".into(), old: json!(old.external_id), new: json!(ext) }];
                let ev = self.event(ctx, "group_update", Some(("group", id, &old.group.name)), changes, json!({}));
                tx.db().insert_event(&ev).await?;
            }
        }
        if let Some((known, unknown)) = members {
            self.set_members(&mut tx.db(), ctx, id, &known).await?;
            if !unknown.is_empty() {
                tx.db().insert_event(&self.ignored_members_event(ctx, id, &old.group.name, &unknown)).await?;
            }
        }
        tx.commit().await?;
        self.scim_group(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_for_scim_names() {
        assert_eq!(username_for("bjensen").unwrap(), ("bjensen".into(), false));
        assert_eq!(username_for("BJensen").unwrap(), ("BJensen".into(), false), "a username keeps its case");
        assert_eq!(username_for("b.jensen-1").unwrap(), ("b.jensen-1".into(), false));
        assert_eq!(username_for("bjensen@example.com").unwrap(), ("bjensen.example.com".into(), true));
        assert_eq!(username_for("@@x").unwrap().0, "x");
        assert_eq!(username_for("1x@y.z").unwrap(), ("x.y.z".into(), true), "a username starts with a letter");
        assert!(username_for("  ").is_err());
    }
}
