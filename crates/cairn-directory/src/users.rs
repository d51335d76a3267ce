use cairn_domain::lifecycle::{transition, MailChoice};
use cairn_domain::password::check_password;
use cairn_domain::query::ListQuery;
use cairn_domain::user::{diff, parse_user_input, Change, UserInput};
use cairn_domain::{CreationSource, FieldError, PasswordAuthority, Secret, State, User};
use cairn_store::Db;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::lifecycle::StateOutcome;
use crate::load::{load_user, read_user};
use crate::{Ctx, Directory, Organization};

impl Directory {
    /// Creates a user from a JumpCloud `systemuserputpost` body.
    pub async fn create_user(&self, ctx: &Ctx, body: &Value, source: CreationSource, origin: &str) -> Result<User> {
        let input = parse_user_input(body, true)?;
        self.create_user_from(ctx, input, source, origin, MailChoice::Default).await
    }

    /// As `create_user`, with the caller's mail choice for a user created ACTIVATED.
    pub async fn create_user_mail(
        &self,
        ctx: &Ctx,
        body: &Value,
        source: CreationSource,
        origin: &str,
        mail: MailChoice,
    ) -> Result<User> {
        let input = parse_user_input(body, true)?;
        self.create_user_from(ctx, input, source, origin, mail).await
    }

    /// Creates a user from validated input. The state is the request's, else the default for
    /// the creation source (§3.2); the password authority is the settings' default.
    pub async fn create_user_from(
        &self,
        ctx: &Ctx,
        input: UserInput,
        source: CreationSource,
        origin: &str,
        mail: MailChoice,
    ) -> Result<User> {
        let org = self.organization().await?;
        let hash = self.checked_hash(&org, input.password.as_ref()).await?;
        let user = self.new_user(&org, input, source, origin, hash, self.now())?;
        let mut tx = self.store().begin().await?;
        self.insert_new_user(&mut tx.db(), ctx, &user, origin, &mail).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Writes a built user with its checks, mail and event in the caller's transaction.
    pub(crate) async fn insert_new_user(
        &self,
        db: &mut Db<'_>,
        ctx: &Ctx,
        user: &User,
        origin: &str,
        mail: &MailChoice,
    ) -> Result<()> {
        self.check_unique(db, user).await?;
        check_manager(db, user).await?;
        db.insert_user(user).await?;
        let changes = creation_changes(user);
        let mut detail = json!({ "state": user.state, "creationSource": origin });
        // Creation in ACTIVATED mails as an activation does (§3.2, §5.2); STAGED sends nothing.
        if let Some((kind, to)) = cairn_domain::mail::on_activation(user, mail) {
            self.mail_user(db, user, kind, &to).await?;
            detail["mail"] = json!({ "type": kind, "to": to });
        }
        let ev = self.event(ctx, "user_create", Some(("user", &user.id, &user.username)), changes, detail);
        db.insert_event(&ev).await?;
        Ok(())
    }

    /// Applies a partial JumpCloud `systemuserput` body: only the fields given change.
    pub async fn update_user(&self, ctx: &Ctx, id: &str, body: &Value) -> Result<User> {
        let input = parse_user_input(body, false)?;
        Ok(self.update_user_from(ctx, id, input).await?.0)
    }

    /// Applies validated input; also says whether anything changed. A state change goes
    /// through the same path as activate and suspend (its own event, revocation).
    pub async fn update_user_from(&self, ctx: &Ctx, id: &str, input: UserInput) -> Result<(User, bool)> {
        let mut tx = self.store().begin().await?;
        let out = self.update_user_in(&mut tx.db(), ctx, id, input, false).await?;
        if out.1 {
            tx.commit().await?;
        }
        Ok(out)
    }

    /// `update_user_from` in the caller's transaction, so a front end can join other writes
    /// to it (SCIM's own columns). `scim_password`: SCIM may set a password whose authority
    /// is SCIM (§3.5).
    pub(crate) async fn update_user_in(
        &self,
        db: &mut Db<'_>,
        ctx: &Ctx,
        id: &str,
        input: UserInput,
        scim_password: bool,
    ) -> Result<(User, bool)> {
        let old = load_user(db, id).await?;
        self.update_loaded_in(db, ctx, old, input, scim_password).await
    }

    /// `update_user_in` for a user already read in the caller's transaction (bulk updates
    /// read a batch's users with one query).
    pub(crate) async fn update_loaded_in(
        &self,
        db: &mut Db<'_>,
        ctx: &Ctx,
        old: User,
        input: UserInput,
        scim_password: bool,
    ) -> Result<(User, bool)> {
        let allowed = match old.password_authority() {
            None => true,
            Some(PasswordAuthority::Scim) => scim_password,
            Some(_) => false,
        };
        let hash = match &input.password {
            Some(_) if !allowed => {
                return Err(Error::Conflict(format!(
                    "the password of {} is held by an external authority ({}) and cannot be set in Cairn",
                    old.username,
                    old.password_authority().map(|a| a.as_str()).unwrap_or("")
                )))
            }
            None => None,
            // Hash outside the write lock would be nicer, but the authority check needs the
            // row; hashing is bounded and short. The policy is read only when it is needed.
            pw => self.checked_hash(&crate::org_of(db).await?, pw.as_ref()).await?,
        };
        refuse_upstream_owned(ctx, &old, &input)?;
        let now = self.now();
        let mut user = old.clone();
        apply_fields(&mut user, input.username, input.email, input.profile);
        if !user.username.eq_ignore_ascii_case(&old.username) {
            // A name given anew follows JumpCloud's rule; a user keeps the one it has.
            cairn_domain::user::check_new_username(&user.username).map_err(|m| Error::invalid("username", m))?;
        }
        if let Some(h) = hash {
            user.password_hash = Some(h);
            user.password_date = Some(now);
            user.password_expired = false;
        }
        match input.account_locked {
            Some(false) => {
                user.account_locked = false;
                user.account_locked_date = None;
                user.bad_login_attempts = 0;
            }
            Some(true) if !old.account_locked => {
                user.account_locked = true;
                user.account_locked_date = Some(now);
            }
            _ => {}
        }
        let target = match (input.state, input.suspended) {
            (Some(s), _) => Some(s),
            (None, Some(true)) => Some(State::Suspended),
            (None, Some(false)) if old.state == State::Suspended => Some(State::Activated),
            _ => None,
        };
        if let Some(to) = target {
            // Refuse before writing anything.
            transition(old.state, to)?;
        }
        let changes = diff(&old, &user);
        let mut changed = !changes.is_empty();
        if changed {
            user.updated = now;
            // Only a changed key can collide with another user.
            if user.username != old.username
                || user.email != old.email
                || user.text("employeeIdentifier") != old.text("employeeIdentifier")
            {
                self.check_unique(db, &user).await?;
            }
            check_manager(db, &user).await?;
            db.update_user(&user).await?;
            // A new password or a lock ends what is open: sessions (and, for a password,
            // every one-time link), as the user's own change does.
            let mut detail = json!({});
            if user.password_hash.as_ref().map(Secret::expose) != old.password_hash.as_ref().map(Secret::expose) {
                detail["revoked_sessions_and_tokens"] = json!(db.revoke_user_access(&user.id).await?);
            } else if user.account_locked && !old.account_locked {
                detail["revoked_sessions"] = json!(db.revoke_sessions(cairn_store::Account::User, &user.id).await?);
            }
            let target = Some(("user", user.id.as_str(), user.username.as_str()));
            let ev = self.event(ctx, "user_update", target, changes, detail);
            db.insert_event(&ev).await?;
        }
        if let Some(to) = target {
            let out = self.apply_state(db, ctx, user.clone(), to, MailChoice::Default, json!({})).await?;
            if let StateOutcome::Changed(u) = out {
                user = u;
                changed = true;
            }
        }
        Ok((user, changed))
    }

    /// Deletes a user for good; the event keeps who it was.
    pub async fn delete_user(&self, ctx: &Ctx, id: &str) -> Result<User> {
        let mut tx = self.store().begin().await?;
        let user = load_user(&mut tx.db(), id).await?;
        tx.db().delete_user(id).await?;
        let ev = self.event(
            ctx,
            "user_delete",
            Some(("user", &user.id, &user.username)),
            vec![],
            json!({ "username": user.username, "email": user.email, "state": user.state }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn get_user(&self, id: &str) -> Result<User> {
        let mut c = self.store().read().await?;
        read_user(&mut c.db(), id).await
    }

    pub async fn list_users(&self, q: &ListQuery) -> Result<(i64, Vec<User>)> {
        let page = self.list_users_page(q).await?;
        Ok((page.total, page.users))
    }

    /// A page of users (from `skip` or after a cursor), the cursor of the next one, and the
    /// count (of a large list, from memory while no user changes: see `counts`).
    pub async fn list_users_page(&self, q: &ListQuery) -> Result<cairn_domain::query::UserPage> {
        let total = crate::counts::total(self, q).await?;
        let mut c = self.store().read().await?;
        Ok(c.db().list_users_page(q, Some(total)).await?)
    }

    /// A new user from validated input, in memory: the state is the request's, else the
    /// default for the creation source (§3.2); the password authority is the settings' default.
    pub(crate) fn new_user(
        &self,
        org: &Organization,
        input: UserInput,
        source: CreationSource,
        origin: &str,
        hash: Option<Secret>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<User> {
        let mut profile = input.profile;
        profile.retain(|_, v| !v.is_null());
        if !profile.contains_key("restrictedFields") {
            if let Some(a) = org.settings.default_password_authority() {
                profile.insert("restrictedFields".into(), PasswordAuthority::restricted_fields(Some(a)));
            }
        }
        let state = match (input.state, input.suspended) {
            (Some(s), _) => s,
            (None, Some(true)) => State::Suspended,
            _ => org.settings.default_state(source),
        };
        Ok(User {
            id: self.new_id(),
            username: input.username.ok_or_else(|| Error::invalid("username", "is required"))?,
            email: input.email.ok_or_else(|| Error::invalid("email", "is required"))?,
            state,
            created: now,
            updated: now,
            creation_source: origin.to_string(),
            password_date: hash.as_ref().map(|_| now),
            password_hash: hash,
            password_expired: false,
            account_locked: input.account_locked.unwrap_or(false),
            account_locked_date: input.account_locked.filter(|l| *l).map(|_| now),
            bad_login_attempts: 0,
            totp_enabled: false,
            totp_secret: None,
            profile,
        })
    }

    /// Checks the policy and hashes; `None` when no password was given.
    pub(crate) async fn checked_hash(&self, org: &Organization, pw: Option<&Secret>) -> Result<Option<Secret>> {
        let Some(pw) = pw else { return Ok(None) };
        check_password(&org.settings.password_policy, pw.expose()).map_err(|m| Error::invalid("password", m))?;
        Ok(Some(self.hasher().hash(pw).await?))
    }

    async fn check_unique(&self, db: &mut Db<'_>, u: &User) -> Result<()> {
        let taken = db.user_conflicts(&u.username, &u.email, u.text("employeeIdentifier"), Some(&u.id)).await?;
        if taken.is_empty() {
            return Ok(());
        }
        let what: Vec<String> = taken
            .iter()
            .map(|f| match *f {
                "username" => format!("username '{}'", u.username),
                "email" => format!("email '{}'", u.email),
                _ => format!("employeeIdentifier '{}'", u.text("employeeIdentifier").unwrap_or("")),
            })
            .collect();
        Err(Error::Conflict(format!("a user with {} already exists", what.join(" and "))))
    }
}

/// The fields a new user was given, as audit changes (defaults left out). Built from the
/// record directly: imports write one per user, so this stays cheap.
pub(crate) fn creation_changes(user: &User) -> Vec<Change> {
    let set = |field: &str, v: Value| Change { field: field.to_string(), old: Value::Null, new: v };
    let mut out = vec![
        set("username", json!(user.username)),
        set("email", json!(user.email)),
        set("state", json!(user.state)),
        set("creationSource", json!(user.creation_source)),
    ];
    if user.password_hash.is_some() {
        out.push(set("password", json!("***")));
    }
    for (k, v) in &user.profile {
        if !is_empty_value(v) {
            out.push(set(k, v.clone()));
        }
    }
    out
}

/// A profile value a creation event leaves out (nothing was set).
pub(crate) fn is_empty_value(v: &Value) -> bool {
    v.is_null() || *v == Value::Bool(false) || v.as_str() == Some("") || v.as_array().is_some_and(|a| a.is_empty())
}

/// True when applying `input` to `old` is only a matter of its profile fields: none of what
/// [`Directory::update_loaded_in`] checks or does beyond setting fields applies — a password
/// (policy, authority), a state change, a lock, a username or e-mail that must stay unique,
/// an employee id that must stay unique, a manager that must exist. Such updates cannot fail
/// on their own, so an import writes many together. Keep in step with `update_loaded_in`.
pub(crate) fn sets_fields_only(old: &User, input: &UserInput) -> bool {
    input.password.is_none()
        && input.state.is_none()
        && input.suspended.is_none()
        && input.account_locked.is_none()
        && input.username.is_none()
        && input.email.as_ref().is_none_or(|e| *e == old.email)
        && old.text("manager").is_none_or(str::is_empty)
        && !input.profile.keys().any(|k| matches!(k.as_str(), "employeeIdentifier" | "manager"))
        && cairn_domain::dirsync::upstream_owned(old.profile.get("restrictedFields")).is_empty()
}

/// The fields an upstream directory owns (`restrictedFields` of type `active_directory`) are
/// changed by its sync (source `adi`) and nothing else: a change from anywhere else is refused,
/// naming the fields. Values given unchanged pass (a SCIM PUT repeats every field).
fn refuse_upstream_owned(ctx: &Ctx, old: &User, input: &UserInput) -> Result<()> {
    if ctx.source == "adi" {
        return Ok(());
    }
    let owned = cairn_domain::dirsync::upstream_owned(old.profile.get("restrictedFields"));
    if owned.is_empty() {
        return Ok(());
    }
    let owns = |f: &str| owned.iter().any(|o| o == f);
    let mut refused: Vec<&str> = Vec::new();
    if owns("username") && input.username.as_ref().is_some_and(|u| *u != old.username) {
        refused.push("username");
    }
    if owns("email") && input.email.as_ref().is_some_and(|e| !e.eq_ignore_ascii_case(&old.email)) {
        refused.push("email");
    }
    for (k, v) in &input.profile {
        let cur = old.profile.get(k).cloned().unwrap_or(Value::Null);
        if owns(k) && cur != *v && !(v.is_null() && is_empty_value(&cur)) {
            refused.push(k);
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "{} of {} {} held by an upstream directory (restrictedFields, active_directory): change {} there",
        refused.join(", "),
        old.username,
        if refused.len() == 1 { "is" } else { "are" },
        if refused.len() == 1 { "it" } else { "them" },
    )))
}

/// The username, e-mail and profile fields of an update applied to `user` (a `null` clears).
pub(crate) fn apply_fields(
    user: &mut User,
    username: Option<String>,
    email: Option<String>,
    profile: serde_json::Map<String, Value>,
) {
    if let Some(u) = username {
        user.username = u;
    }
    if let Some(e) = email {
        user.email = e;
    }
    for (k, v) in profile {
        if v.is_null() {
            user.profile.remove(&k);
        } else {
            user.profile.insert(k, v);
        }
    }
}

async fn check_manager(db: &mut Db<'_>, u: &User) -> Result<()> {
    if let Some(m) = u.text("manager").filter(|m| !m.is_empty()) {
        if m == u.id {
            return Err(Error::Invalid(vec![FieldError::new("manager", "a user cannot be their own manager")]));
        }
        if db.get_user(m).await?.is_none() {
            return Err(Error::Invalid(vec![FieldError::new("manager", format!("no user with id '{m}'"))]));
        }
    }
    Ok(())
}
