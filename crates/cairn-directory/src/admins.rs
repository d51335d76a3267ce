//! Administrators of the admin portal (§7.1): sign-in with Argon2 and, once enrolled, TOTP;
//! sessions of their own (the users' `sessions` table points at users); the Users page's
//! columns remembered per administrator.
//!
//! Sign-in, as a state machine:
//! ```text
//!   password ok, no TOTP enrolled ───────────▶ session `admin`
//!   password ok, TOTP enrolled ─▶ session `admin_totp` ── right code ──▶ session `admin`
//!   wrong password / unknown e-mail / wrong code ──▶ refused (one message for all), event
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cairn_domain::query::ListQuery;
use cairn_domain::user::normalize_email;
use cairn_domain::{Actor, Admin, Secret, User};
use cairn_store::AdminSession;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde_json::{json, Value};

use crate::credentials::token_hash;
use crate::error::{Error, Result};
use crate::{Ctx, Directory};

/// How long an administrator stays signed in.
pub const ADMIN_SESSION_VALIDITY: Duration = Duration::hours(8);
/// How long the TOTP step of a sign-in may take.
const TOTP_STEP_VALIDITY: Duration = Duration::minutes(5);

/// The one message for any refused administrator sign-in.
pub const ADMIN_LOGIN_REFUSED: &str = "The e-mail address, password or code is incorrect.";

/// Where a correct password leads.
#[derive(Debug, Clone)]
pub enum AdminStep {
    Done(Admin),
    /// A code from the administrator's authenticator is needed.
    Totp(Admin),
    /// MFA is required of this administrator and no authenticator is enrolled: enrol first.
    Enroll(Admin),
}

impl AdminStep {
    pub fn admin(&self) -> &Admin {
        match self {
            AdminStep::Done(a) | AdminStep::Totp(a) | AdminStep::Enroll(a) => a,
        }
    }
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    B64URL.encode(b)
}

/// RFC 6238 with one step of clock skew either way.
fn totp_ok(secret: &[u8], code: &str, now: DateTime<Utc>) -> bool {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let t = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, secret.to_vec());
    t.check(&code, now.timestamp().max(0) as u64)
}

fn admin_ctx(ctx: &Ctx, a: &Admin) -> Ctx {
    Ctx { actor: Actor::admin(&a.id, &a.email), ..ctx.clone() }
}

impl Directory {
    fn admin_key(&self) -> Result<&[u8; 32]> {
        self.config().secret_key.as_ref().ok_or_else(|| Error::Internal("no secrets key is configured".into()))
    }

    pub async fn get_admin(&self, id: &str) -> Result<Admin> {
        let mut c = self.store().read().await?;
        c.db().get_admin(id).await?.ok_or_else(|| Error::NotFound(format!("no administrator with id '{id}'")))
    }

    pub async fn admin_totp_enrolled(&self, id: &str) -> Result<bool> {
        let mut c = self.store().read().await?;
        Ok(c.db().admin_extras(id).await?.totp_secret.is_some())
    }

    /// Checks an administrator's e-mail and password. Every attempt is an event; the error
    /// never says which part was wrong.
    pub async fn admin_login(&self, ctx: &Ctx, email: &str, password: &Secret) -> Result<AdminStep> {
        let email = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
        let (admin, extras) = {
            let mut c = self.store().read().await?;
            match c.db().admin_by_email(&email).await? {
                Some(a) => {
                    let x = c.db().admin_extras(&a.id).await?;
                    (Some(a), x)
                }
                None => (None, Default::default()),
            }
        };
        let ok = match &admin {
            Some(a) => self.hasher().verify(password, &a.password_hash).await?,
            None => {
                // Costs what a wrong password costs, so a missing account does not show.
                let _ = self.hasher().hash(password).await?;
                false
            }
        };
        let step = match admin {
            Some(a) if ok => {
                if extras.totp_secret.is_some() {
                    AdminStep::Totp(a)
                } else if extras.mfa_required {
                    AdminStep::Enroll(a)
                } else {
                    AdminStep::Done(a)
                }
            }
            _ => {
                self.admin_login_event(ctx, None, &email, false, "password").await?;
                return Err(Error::Unauthorized(ADMIN_LOGIN_REFUSED.into()));
            }
        };
        match &step {
            AdminStep::Done(a) => self.admin_login_event(ctx, Some(a), &email, true, "password").await?,
            AdminStep::Enroll(a) => {
                self.admin_login_event(ctx, Some(a), &email, true, "password; MFA enrolment required").await?
            }
            AdminStep::Totp(_) => {}
        }
        Ok(step)
    }

    /// Checks the TOTP code of an administrator who passed the password step.
    pub async fn admin_verify_totp(&self, ctx: &Ctx, admin_id: &str, code: &str) -> Result<Admin> {
        let admin = self.get_admin(admin_id).await?;
        let sealed = {
            let mut c = self.store().read().await?;
            c.db().admin_extras(admin_id).await?.totp_secret
        };
        let ok = match sealed {
            Some(s) => totp_ok(&crate::secretbox::open(self.admin_key()?, &s)?, code, self.now()),
            None => false,
        };
        self.admin_login_event(ctx, Some(&admin), &admin.email, ok, "totp").await?;
        if ok {
            Ok(admin)
        } else {
            Err(Error::Unauthorized(ADMIN_LOGIN_REFUSED.into()))
        }
    }

    async fn admin_login_event(&self, ctx: &Ctx, a: Option<&Admin>, email: &str, ok: bool, step: &str) -> Result<()> {
        let ctx = match a {
            Some(a) => admin_ctx(ctx, a),
            None => ctx.clone(),
        };
        let id = a.map(|a| a.id.clone()).unwrap_or_default();
        let mut ev = self.event(&ctx, "admin_login", Some(("admin", &id, email)), vec![], json!({ "step": step }));
        if !ok {
            ev.outcome = "failure".into();
        }
        let mut tx = self.store().begin().await?;
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        metrics::counter!("cairn_auth_total", "protocol" => "admin_portal", "outcome" => if ok { "success" } else { "failure" })
            .increment(1);
        Ok(())
    }

    // ---- TOTP enrolment ------------------------------------------------------------------

    /// The base32 key and QR code (SVG) of a sealed pending secret, for the administrator.
    pub async fn admin_totp_enrollment(&self, admin: &Admin, sealed: &str) -> Result<(String, String)> {
        let secret = crate::secretbox::open(self.admin_key()?, sealed)?;
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
        let secret = crate::secretbox::open(self.admin_key()?, sealed)?;
        if !totp_ok(&secret, code, self.now()) {
            return Err(Error::invalid("code", "The code does not match. Check the time on your phone and try again."));
        }
        let admin = self.get_admin(admin_id).await?;
        let mut tx = self.store().begin().await?;
        tx.db().set_admin_totp(admin_id, Some(sealed), self.now()).await?;
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

    /// The live session behind a cookie, with its administrator.
    pub async fn admin_session(&self, cookie: &str) -> Result<Option<(AdminSession, Admin)>> {
        let mut c = self.store().read().await?;
        let Some(s) = c.db().get_admin_session(&token_hash(cookie), self.now()).await? else {
            return Ok(None);
        };
        let Some(a) = c.db().get_admin(&s.admin_id).await? else {
            return Ok(None);
        };
        Ok(Some((s, a)))
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
        let mut c = self.store().read().await?;
        Ok(c.db().list_users_in_group(q, group_id).await?)
    }
}
