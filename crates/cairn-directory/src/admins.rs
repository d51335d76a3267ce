//! Administrators of the admin portal (§7.1): sign-in with Argon2 and, once enrolled, TOTP;
//! sessions of their own (the users' `sessions` table points at users); the Users page's
//! columns remembered per administrator.
//!
//! Sign-in is `Directory::authenticate` with `Protocol::AdminPortal` (lockout and throttling
//! as for users):
//! ```text
//!   password ok, no TOTP enrolled ────────▶ session `admin`
//!   password ok, TOTP enrolled ─▶ ticket `admin_totp` ── right code ──▶ session `admin`
//!   password ok, MFA required, none enrolled ─▶ session `admin_enroll` (account page only)
//!                                   ── authenticator confirmed ──▶ session `admin`
//!   wrong password / unknown e-mail / wrong code ──▶ refused (one message for all), event
//! ```

use cairn_domain::lockout::{LockPolicy, Lockout};
use cairn_domain::query::ListQuery;
use cairn_domain::{Admin, User};
use cairn_store::{Account, AdminSession};
use chrono::Duration;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::tokens::{random_token, token_hash};
use crate::{Ctx, Directory};

/// How long an administrator stays signed in.
pub const ADMIN_SESSION_VALIDITY: Duration = Duration::hours(8);
/// How long the TOTP step of a sign-in may take.
const TOTP_STEP_VALIDITY: Duration = Duration::minutes(5);

/// The one message for any refused administrator sign-in.
pub const ADMIN_LOGIN_REFUSED: &str = "The e-mail address, password or code is incorrect.";

impl Directory {
    pub async fn get_admin(&self, id: &str) -> Result<Admin> {
        let mut c = self.store().read().await?;
        c.db().get_admin(id).await?.ok_or_else(|| Error::NotFound(format!("no administrator with id '{id}'")))
    }

    pub async fn admin_totp_enrolled(&self, id: &str) -> Result<bool> {
        let mut c = self.store().read().await?;
        Ok(c.db().admin_extras(id).await?.totp_secret.is_some())
    }

    // ---- TOTP enrolment ------------------------------------------------------------------

    /// The base32 key and QR code (SVG) of a sealed pending secret, for the administrator.
    pub async fn admin_totp_enrollment(&self, admin: &Admin, sealed: &str) -> Result<(String, String)> {
        let secret = crate::secretbox::open(self.secret_key()?, sealed)?;
        let org = self.organization().await?.settings.name;
        let b32 = totp_rs::Secret::Raw(secret).to_encoded().to_string();
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let uri = format!(
            "otpauth://totp/{}:{}?secret={b32}&issuer={}&algorithm=SHA1&digits=6&period=30",
            enc(&org),
            enc(&admin.email),
            enc(&org)
        );
        let svg = qrcode::QrCode::new(uri.as_bytes())
            .map_err(|e| Error::Internal(format!("QR code: {e}")))?
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build();
        Ok((b32, svg))
    }

    /// Enrols the administrator's authenticator once a code from it matches.
    pub async fn admin_confirm_totp(&self, ctx: &Ctx, admin_id: &str, sealed: &str, code: &str) -> Result<()> {
        let secret = crate::secretbox::open(self.secret_key()?, sealed)?;
        let Some(step) = crate::auth::totp_step(&secret, code, self.now()) else {
            return Err(Error::invalid("code", "The code does not match. Check the time on your phone and try again."));
        };
        let admin = self.get_admin(admin_id).await?;
        let mut tx = self.store().begin().await?;
        tx.db().set_admin_totp(admin_id, Some(sealed), self.now()).await?;
        // A new authenticator starts its steps over; the code just shown is used up.
        tx.db().clear_totp_step(Account::Admin, admin_id).await?;
        tx.db().claim_totp_step(Account::Admin, admin_id, step).await?;
        let ev = self.event(ctx, "admin_mfa_enroll", Some(("admin", &admin.id, &admin.email)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Requires (or stops requiring) MFA of an administrator (§7.1): one who has no
    /// authenticator yet must enrol one at the next sign-in before anything else.
    pub async fn set_admin_mfa_required(&self, ctx: &Ctx, admin_id: &str, required: bool) -> Result<()> {
        let admin = self.get_admin(admin_id).await?;
        let mut tx = self.store().begin().await?;
        tx.db().set_admin_mfa_required(admin_id, required).await?;
        let ev = self.event(
            ctx,
            "admin_update",
            Some(("admin", &admin.id, &admin.email)),
            vec![],
            json!({ "mfa_required": required }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether MFA is required of this administrator.
    pub async fn admin_mfa_required(&self, admin_id: &str) -> Result<bool> {
        let mut c = self.store().read().await?;
        Ok(c.db().admin_extras(admin_id).await?.mfa_required)
    }

    /// Removes the administrator's authenticator (refused while MFA is required of them).
    pub async fn admin_remove_totp(&self, ctx: &Ctx, admin_id: &str) -> Result<()> {
        let admin = self.get_admin(admin_id).await?;
        if self.admin_mfa_required(admin_id).await? {
            return Err(Error::Conflict(
                "MFA is required for this administrator: the authenticator cannot be removed.".into(),
            ));
        }
        let mut tx = self.store().begin().await?;
        tx.db().set_admin_totp(admin_id, None, self.now()).await?;
        let ev = self.event(ctx, "admin_mfa_reset", Some(("admin", &admin.id, &admin.email)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Clears an administrator's lock and failure count; false when there was none.
    pub async fn unlock_admin(&self, ctx: &Ctx, email: &str) -> Result<bool> {
        let email = email.trim().to_lowercase();
        let mut tx = self.store().begin().await?;
        let admin = tx.db().admin_by_email(&email).await?;
        let Some((admin, extras)) = (match admin {
            Some(a) => tx.db().lock_admin(&a.id).await?,
            None => None,
        }) else {
            return Err(Error::NotFound(format!("no administrator with e-mail '{email}'")));
        };
        if extras.lockout == Lockout::OPEN {
            return Ok(false);
        }
        tx.db().set_lockout(Account::Admin, &admin.id, &Lockout::OPEN).await?;
        let ev = self.event(ctx, "admin_unlock", Some(("admin", &admin.id, &admin.email)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(extras.lockout.locked)
    }

    // ---- sessions ------------------------------------------------------------------------

    /// Starts an administrator session of `kind` (`admin` or `admin_totp`); returns the cookie
    /// value, of which only the hash is stored.
    pub async fn start_admin_session(&self, admin_id: &str, kind: &str) -> Result<String> {
        self.start_admin_session_with(admin_id, kind, json!({})).await
    }

    /// `start_admin_session` with session data (e.g. `{"enroll": true}`).
    pub async fn start_admin_session_with(
        &self,
        admin_id: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<String> {
        let token = random_token();
        let now = self.now();
        let valid = if kind == "admin" { ADMIN_SESSION_VALIDITY } else { TOTP_STEP_VALIDITY };
        let mut tx = self.store().begin().await?;
        tx.db().purge_admin_sessions(now).await?;
        tx.db()
            .put_admin_session(&AdminSession {
                id: token_hash(&token),
                admin_id: admin_id.into(),
                kind: kind.into(),
                created: now,
                expires: now + valid,
                data,
            })
            .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The live session behind a cookie, with its administrator; none once the
    /// administrator is locked out (a lock ends what is open, not only new sign-ins).
    pub async fn admin_session(&self, cookie: &str) -> Result<Option<(AdminSession, Admin)>> {
        let mut c = self.store().read().await?;
        let Some(s) = c.db().get_admin_session(&token_hash(cookie), self.now()).await? else {
            return Ok(None);
        };
        let Some(a) = c.db().get_admin(&s.admin_id).await? else {
            return Ok(None);
        };
        let policy = LockPolicy::from(&crate::org_of(&mut c.db()).await?.settings.password_policy);
        if c.db().admin_extras(&a.id).await?.lockout.is_locked(&policy, self.now()) {
            return Ok(None);
        }
        Ok(Some((s, a)))
    }

    /// Turns an `admin_enroll` session into a full one once its authenticator is enrolled.
    pub async fn finish_admin_enrolment(&self, cookie: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        if let Some(mut s) = tx.db().get_admin_session(&token_hash(cookie), now).await? {
            if s.kind == "admin_enroll" && tx.db().admin_extras(&s.admin_id).await?.totp_secret.is_some() {
                s.kind = "admin".into();
                s.expires = now + ADMIN_SESSION_VALIDITY;
                s.data = json!({});
                tx.db().put_admin_session(&s).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_admin_session(&self, s: &AdminSession) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.db().put_admin_session(s).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn end_admin_session(&self, cookie: &str) -> Result<()> {
        let mut tx = self.store().begin().await?;
        tx.db().delete_admin_session(&token_hash(cookie)).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- preferences ---------------------------------------------------------------------

    /// The Users page's columns this administrator chose, if any.
    pub async fn admin_columns(&self, admin_id: &str) -> Result<Option<Vec<String>>> {
        let mut c = self.store().read().await?;
        let raw = c.db().admin_extras(admin_id).await?.user_columns;
        Ok(raw.and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok()))
    }

    pub async fn set_admin_columns(&self, admin_id: &str, columns: &[String]) -> Result<()> {
        if columns.is_empty() || columns.len() > 64 || columns.iter().any(|c| c.is_empty() || c.len() > 64) {
            return Err(Error::invalid("columns", "choose between 1 and 64 columns"));
        }
        let mut tx = self.store().begin().await?;
        tx.db().set_admin_columns(admin_id, &Value::from(columns.to_vec()).to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The page of users a list query asks for among the members of a group.
    pub async fn list_users_in_group(&self, q: &ListQuery, group_id: &str) -> Result<(i64, Vec<User>)> {
        // The count as a list's (kept while no user or membership changes): counting a large
        // group on every page load was a whole-group read per admin page (issue 19).
        let total = crate::counts::total_in(self, q, Some(group_id)).await?;
        let mut c = self.store().read().await?;
        Ok(c.db().list_users_in_group(q, group_id, Some(total)).await?)
    }
}
