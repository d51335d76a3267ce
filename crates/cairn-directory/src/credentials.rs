//! Credentials (§3.5): passwords set from links, by the user or the admin; forced change,
//! unlock, TOTP enrolment and reset; portal sessions; the mail each of these sends (§5.2).
//! Checking a secret is `auth.rs` (`authenticate`); lockout is `cairn_domain::lockout`.

use cairn_domain::mail::MailKind;
use cairn_domain::password::check_password;
use cairn_domain::{OutboxMessage, Secret, Session, State, User};
use cairn_store::Db;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde_json::{json, Value};

use crate::error::{Error, Result, LOGIN_REFUSED};
use crate::load::load_user;
use crate::tokens::{link_key, random_token, token_hash};
use crate::{Ctx, Directory};

pub const SESSION_VALIDITY: Duration = Duration::hours(8);

impl Directory {
    // ---- passwords ----------------------------------------------------------------------

    /// Sets a password in the caller's transaction: authority, policy, hash, and the record.
    pub(crate) async fn write_password(
        &self,
        db: &mut Db<'_>,
        ctx: &Ctx,
        mut user: User,
        new: &Secret,
        action: &str,
    ) -> Result<User> {
        if let Some(a) = user.password_authority() {
            return Err(Error::Conflict(format!(
                "The password of this account is managed by an external directory ({}) and cannot be changed here.",
                a.as_str()
            )));
        }
        let org = crate::org_of(db).await?;
        check_password(&org.settings.password_policy, new.expose())
            .map_err(|m| Error::invalid("password", format!("The new password {m}.")))?;
        let hash = self.hasher().hash(new).await?;
        let old = user.clone();
        let now = self.now();
        user.password_hash = Some(hash);
        user.password_date = Some(now);
        user.password_expired = false;
        user.updated = now;
        db.update_user(&user).await?;
        // A new password ends what the old one opened: every session, and every link.
        let revoked = db.revoke_user_access(&user.id).await?;
        let ev = self.event(
            ctx,
            action,
            Some(("user", &user.id, &user.username)),
            cairn_domain::user::diff(&old, &user),
            json!({ "revoked_sessions_and_tokens": revoked }),
        );
        db.insert_event(&ev).await?;
        Ok(user)
    }

    /// The user a one-time link belongs to, if it is still valid (the page shows a form).
    pub async fn link_user(&self, token: &str, kind: &str) -> Result<Option<User>> {
        let mut c = self.store().read().await?;
        match c.db().token_user(&link_key(token), kind, self.now()).await? {
            Some(id) => Ok(c.db().get_user(&id).await?),
            None => Ok(None),
        }
    }

    /// Sets the password from an activation or reset link; the link is consumed.
    pub async fn set_password_with_link(&self, ctx: &Ctx, token: &str, kind: &str, new: &Secret) -> Result<User> {
        let invalid = || Error::NotFound("This link is not valid: it has expired or has already been used.".into());
        let mut tx = self.store().begin().await?;
        let id = tx.db().token_user(&link_key(token), kind, self.now()).await?.ok_or_else(invalid)?;
        let user = load_user(&mut tx.db(), &id).await?;
        if user.state != State::Activated {
            return Err(invalid());
        }
        let action = if kind == "activation" { "password_set" } else { "password_reset" };
        tx.db().take_token(&link_key(token), kind, self.now()).await?.ok_or_else(invalid)?;
        // Also ends every other link and session of the user.
        let user = self.write_password(&mut tx.db(), ctx, user, new, action).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Changes one's own password, knowing the current one: the current one is checked by
    /// `authenticate` (so wrong guesses count toward lockout), and the change ends every
    /// session of the user (the portal opens a new one).
    pub async fn change_own_password(&self, ctx: &Ctx, user_id: &str, current: &Secret, new: &Secret) -> Result<User> {
        let user = self.get_user(user_id).await?;
        if let Some(a) = user.password_authority() {
            return Err(Error::Conflict(format!(
                "The password of this account is managed by an external directory ({}) and cannot be changed here.",
                a.as_str()
            )));
        }
        let req = crate::AuthRequest {
            protocol: cairn_domain::access::Protocol::Portal,
            credential: crate::Credential::Password { login: &user.username, password: current, code: None },
            resource: None,
            client_addr: ctx.client_addr.clone(),
            device: None,
        };
        match self.authenticate(ctx, req).await {
            Ok(a) if a.principal().id() == user_id => {}
            Ok(_) | Err(Error::Refused(crate::Refusal::Credentials)) => {
                return Err(Error::invalid("current_password", "The current password is not correct."))
            }
            Err(e) => return Err(e),
        }
        let mut tx = self.store().begin().await?;
        let user = load_user(&mut tx.db(), user_id).await?;
        if user.state != State::Activated {
            return Err(Error::Unauthorized(LOGIN_REFUSED.into()));
        }
        let user = self.write_password(&mut tx.db(), ctx, user, new, "password_change").await?;
        tx.commit().await?;
        Ok(user)
    }

    // ---- admin credential actions ---------------------------------------------------------

    /// Forces a password change: expired, sessions and tokens revoked.
    pub async fn expire_password(&self, ctx: &Ctx, id: &str) -> Result<(User, bool)> {
        let mut tx = self.store().begin().await?;
        let user = load_user(&mut tx.db(), id).await?;
        if user.password_hash.is_none() {
            return Ok((user, false));
        }
        let old = user.clone();
        let mut u = user;
        u.password_expired = true;
        u.updated = self.now();
        tx.db().update_user(&u).await?;
        let revoked = tx.db().revoke_user_access(&u.id).await?;
        let ev = self.event(
            ctx,
            "password_expire",
            Some(("user", &u.id, &u.username)),
            cairn_domain::user::diff(&old, &u),
            json!({ "revoked_sessions_and_tokens": revoked }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok((u, !old.password_expired))
    }

    /// Clears the lock and the failure counter; `password_expired` stays.
    pub async fn unlock(&self, ctx: &Ctx, id: &str) -> Result<(User, bool)> {
        let mut tx = self.store().begin().await?;
        let old = load_user(&mut tx.db(), id).await?;
        if !old.account_locked && old.bad_login_attempts == 0 {
            return Ok((old, false));
        }
        let mut u = old.clone();
        u.account_locked = false;
        u.account_locked_date = None;
        u.bad_login_attempts = 0;
        u.updated = self.now();
        tx.db().update_user(&u).await?;
        let ev = self.event(
            ctx,
            "user_unlock",
            Some(("user", &u.id, &u.username)),
            cairn_domain::user::diff(&old, &u),
            json!({}),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok((u, old.account_locked))
    }

    /// Clears TOTP, ends every session, and mails the user (never a staged one).
    pub async fn reset_mfa(&self, ctx: &Ctx, id: &str) -> Result<(User, bool)> {
        self.reset_mfa_with(ctx, id, None).await
    }

    /// [`Directory::reset_mfa`] with JumpCloud's enrolment period: until `exclusion_until`
    /// the user may sign in without a second factor although MFA is required, then must
    /// enrol (`mfa{exclusion, exclusionUntil}`). Without one, any earlier exclusion ends.
    pub async fn reset_mfa_with(
        &self,
        ctx: &Ctx,
        id: &str,
        exclusion_until: Option<DateTime<Utc>>,
    ) -> Result<(User, bool)> {
        let mut tx = self.store().begin().await?;
        let old = load_user(&mut tx.db(), id).await?;
        let mut u = old.clone();
        u.totp_enabled = false;
        u.totp_secret = None;
        let mut mfa = match u.profile.get("mfa") {
            Some(Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        mfa.insert("configured".into(), json!(false));
        mfa.remove("exclusionDays");
        match exclusion_until {
            Some(t) => {
                mfa.insert("exclusion".into(), json!(true));
                mfa.insert("exclusionUntil".into(), json!(cairn_domain::user::format_time(t)));
            }
            None => {
                mfa.insert("exclusion".into(), json!(false));
                mfa.remove("exclusionUntil");
            }
        }
        u.profile.insert("mfa".into(), Value::Object(mfa));
        let changes = cairn_domain::user::diff(&old, &u);
        let changed = !changes.is_empty() || old.totp_secret.is_some();
        if changed {
            u.updated = self.now();
            tx.db().update_user(&u).await?;
        }
        let revoked = tx.db().revoke_user_access(&u.id).await?;
        let mailed = u.state == State::Activated;
        if mailed {
            let to = u.email.clone();
            self.mail_user(&mut tx.db(), &u, MailKind::TotpReset, &to).await?;
        }
        let ev = self.event(
            ctx,
            "mfa_reset",
            Some(("user", &u.id, &u.username)),
            changes,
            json!({ "revoked_sessions_and_tokens": revoked, "mailed": mailed,
                    "exclusion_until": exclusion_until.map(cairn_domain::user::format_time) }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok((u, changed))
    }

    /// An administrator sets a user's password (`POST /systemusers/{id}/password`): the
    /// same rules as every password change — the external authority, the policy, a new
    /// password ending every session and link — on the user's locked row.
    pub async fn set_password_by_admin(&self, ctx: &Ctx, id: &str, new: &Secret) -> Result<User> {
        let mut tx = self.store().begin().await?;
        let user = load_user(&mut tx.db(), id).await?;
        let user = self.write_password(&mut tx.db(), ctx, user, new, "password_set_by_admin").await?;
        tx.commit().await?;
        Ok(user)
    }

    /// "Send Activation Email": activation mail while the password is pending, a reset mail
    /// once it is set; nothing to staged or suspended users (the reason is returned).
    pub async fn send_activation_email(&self, ctx: &Ctx, id: &str) -> Result<std::result::Result<MailKind, String>> {
        let mut tx = self.store().begin().await?;
        let u = load_user(&mut tx.db(), id).await?;
        if u.state != State::Activated {
            return Ok(Err(format!("{} is {}: only ACTIVATED users receive mail", u.username, u.state)));
        }
        let (kind, to) = if u.activated() {
            (MailKind::PasswordReset, u.email.clone())
        } else {
            (MailKind::Activation, u.text("alternateEmail").filter(|a| !a.is_empty()).unwrap_or(&u.email).to_string())
        };
        self.mail_user(&mut tx.db(), &u, kind, &to).await?;
        let ev =
            self.event(ctx, "mail_send", Some(("user", &u.id, &u.username)), vec![], json!({ "type": kind, "to": to }));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(Ok(kind))
    }

    /// "Send Password Reset Email": ACTIVATED users with a password only.
    pub async fn send_password_reset_email(
        &self,
        ctx: &Ctx,
        id: &str,
    ) -> Result<std::result::Result<MailKind, String>> {
        let mut tx = self.store().begin().await?;
        let u = load_user(&mut tx.db(), id).await?;
        if u.state != State::Activated {
            return Ok(Err(format!("{} is {}: only ACTIVATED users receive mail", u.username, u.state)));
        }
        if !u.activated() {
            return Ok(Err(format!("{} has no password yet: send an activation e-mail instead", u.username)));
        }
        if u.password_authority().is_some() {
            return Ok(Err(format!("the password of {} is managed by an external directory", u.username)));
        }
        let to = u.email.clone();
        self.mail_user(&mut tx.db(), &u, MailKind::PasswordReset, &to).await?;
        let ev = self.event(
            ctx,
            "mail_send",
            Some(("user", &u.id, &u.username)),
            vec![],
            json!({ "type": MailKind::PasswordReset, "to": to }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(Ok(MailKind::PasswordReset))
    }

    /// A user's own reset request from the portal. Answers the same whether or not the
    /// address exists; mails only an ACTIVATED user with a password Cairn holds, and at most
    /// `resets_per_account_hour` times an hour. Requests from one client address are limited
    /// (`Refusal::Throttled`), since every one of them is recorded.
    pub async fn request_password_reset(&self, ctx: &Ctx, login: &str) -> Result<()> {
        let now = self.now();
        if let Some(a) = ctx.client_addr.as_deref().and_then(crate::auth::address_key) {
            if !self.inner.reset_throttle.lock().expect("throttle").take(&a, now) {
                return Err(Error::Refused(crate::Refusal::Throttled));
            }
        }
        let login = login.trim().to_lowercase();
        let found = if login.is_empty() || login.chars().count() > crate::MAX_LOGIN_CHARS || login.contains('\0') {
            None
        } else {
            let mut c = self.store().read().await?;
            match c.db().user_by_email(&login).await? {
                Some(u) => Some(u.id),
                None => c.db().user_by_username(&login).await?.map(|u| u.id),
            }
        };
        let mut tx = self.store().begin().await?;
        let user = match &found {
            Some(id) => tx.db().lock_user(id).await?,
            None => None,
        };
        let (target, outcome) = match &user {
            Some(u) if u.state == State::Activated && u.activated() && u.password_authority().is_none() => {
                let to = u.email.clone();
                let since = now - Duration::hours(1);
                let sent = tx.db().count_mail_since(&to, MailKind::PasswordReset.as_str(), since).await?;
                if sent >= self.config().resets_per_account_hour {
                    (Some(("user", u.id.as_str(), u.username.as_str())), "limited: enough reset mails this hour")
                } else {
                    self.mail_user(&mut tx.db(), u, MailKind::PasswordReset, &to).await?;
                    (Some(("user", u.id.as_str(), u.username.as_str())), "mailed")
                }
            }
            Some(u) => (Some(("user", u.id.as_str(), u.username.as_str())), "not eligible"),
            None => (None, "no such user"),
        };
        let detail = json!({ "login": crate::auth::clip(&login, 128), "result": outcome });
        let ev = self.event(ctx, "password_reset_request", target, vec![], detail);
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- TOTP ---------------------------------------------------------------------------

    pub(crate) fn secret_key(&self) -> Result<&[u8; 32]> {
        self.config().secret_key.as_ref().ok_or_else(|| Error::Internal("no secrets key is configured".into()))
    }

    /// A new TOTP secret for enrolment, sealed; the portal keeps it in the session until the
    /// user confirms it with a code (`totp_enrollment` shows it).
    pub fn new_totp_secret(&self) -> Result<String> {
        let mut secret = [0u8; 20];
        rand::thread_rng().fill_bytes(&mut secret);
        Ok(crate::secretbox::seal(self.secret_key()?, &secret))
    }

    /// The base32 key, otpauth URI and QR code (SVG) of a sealed pending secret.
    pub async fn totp_enrollment(&self, user: &User, sealed: &str) -> Result<(String, String, String)> {
        let secret = crate::secretbox::open(self.secret_key()?, sealed)?;
        let org = self.organization().await?.settings.name;
        let b32 = totp_rs::Secret::Raw(secret).to_encoded().to_string();
        let label = format!("{}:{}", pct(&org), pct(&user.username));
        let uri = format!("otpauth://totp/{label}?secret={b32}&issuer={}&algorithm=SHA1&digits=6&period=30", pct(&org));
        let svg = qrcode::QrCode::new(uri.as_bytes())
            .map_err(|e| Error::Internal(format!("QR code: {e}")))?
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build();
        Ok((b32, uri, svg))
    }

    /// Confirms enrolment with a code from the new authenticator.
    pub async fn confirm_totp(&self, ctx: &Ctx, user_id: &str, sealed: &str, code: &str) -> Result<User> {
        let secret = crate::secretbox::open(self.secret_key()?, sealed)?;
        let Some(step) = crate::auth::totp_step(&secret, code, self.now()) else {
            return Err(Error::invalid(
                "code",
                "The code does not match. Check the time on your phone and try the current code.",
            ));
        };
        let mut tx = self.store().begin().await?;
        let old = load_user(&mut tx.db(), user_id).await?;
        let mut u = old.clone();
        u.totp_secret = Some(Secret::new(sealed));
        u.totp_enabled = true;
        u.updated = self.now();
        tx.db().update_user(&u).await?;
        // A new authenticator starts its steps over; the code just shown is used up.
        tx.db().clear_totp_step(cairn_store::Account::User, user_id).await?;
        tx.db().claim_totp_step(cairn_store::Account::User, user_id, step).await?;
        let ev = self.event(
            ctx,
            "mfa_enroll",
            Some(("user", &u.id, &u.username)),
            cairn_domain::user::diff(&old, &u),
            json!({}),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(u)
    }

    // ---- sessions -----------------------------------------------------------------------

    /// Starts a portal session; returns the cookie value (only its hash is stored).
    pub async fn start_session(&self, user_id: &str, kind: &str, data: Value) -> Result<String> {
        let token = random_token();
        let now = self.now();
        let mut tx = self.store().begin().await?;
        tx.db()
            .put_session(&Session {
                id: token_hash(&token),
                user_id: user_id.into(),
                kind: kind.into(),
                created: now,
                expires: now + SESSION_VALIDITY,
                data,
            })
            .await?;
        tx.commit().await?;
        Ok(token)
    }

    pub async fn session(&self, cookie: &str) -> Result<Option<Session>> {
        let mut c = self.store().read().await?;
        Ok(c.db().get_session(&token_hash(cookie), self.now()).await?)
    }

    /// The signed-in user behind a portal cookie: a full session (`kind`), whose user may
    /// still sign in — ACTIVATED, not locked, password not expired. Anything else ends it.
    pub async fn portal_session(&self, cookie: &str, kind: &str) -> Result<Option<(Session, User)>> {
        let now = self.now();
        let found = {
            let mut c = self.store().read().await?;
            match c.db().get_session(&token_hash(cookie), now).await? {
                Some(s) if s.kind == kind => {
                    let user = c.db().get_user(&s.user_id).await?;
                    let org = crate::org_of(&mut c.db()).await?;
                    user.map(|u| (s, u, org))
                }
                _ => return Ok(None),
            }
        };
        let Some((s, u, org)) = found else { return Ok(None) };
        let policy = cairn_domain::lockout::LockPolicy::from(&org.settings.password_policy);
        if u.state == State::Activated && !u.password_expired && !u.lockout().is_locked(&policy, now) {
            return Ok(Some((s, u)));
        }
        self.end_session(cookie).await?;
        Ok(None)
    }

    pub async fn update_session(&self, s: &Session) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.db().put_session(s).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn end_session(&self, cookie: &str) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.db().delete_session(&token_hash(cookie)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Outbox listing.
    pub async fn list_messages(&self, q: &cairn_domain::OutboxQuery) -> Result<(i64, Vec<OutboxMessage>)> {
        let mut c = self.store().read().await?;
        let (total, list) = c.db().list_messages(q).await?;
        Ok((total, list.into_iter().map(OutboxMessage::with_bodies).collect()))
    }
}

fn pct(s: &str) -> String {
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

/// Generates a current code (tests and the admin's own enrolment check).
pub fn totp_code(secret: &[u8], now: DateTime<Utc>) -> String {
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, secret.to_vec())
        .generate(now.timestamp().max(0) as u64)
}
