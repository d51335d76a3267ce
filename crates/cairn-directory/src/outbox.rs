//! Mail into the outbox (§5): messages and the one-time links they carry, prepared in memory
//! and written in the caller's transaction.

use cairn_domain::mail::{MailKind, MailParams};
use cairn_domain::{OutboxMessage, User};
use cairn_store::Db;
use chrono::Duration;

use crate::error::Result;
use crate::tokens::{link_key, link_token};
use crate::Directory;

pub const ACTIVATION_VALIDITY: Duration = Duration::days(7);
pub const RESET_VALIDITY: Duration = Duration::hours(1);

/// Messages pruned per transaction.
const PRUNE_BATCH: i64 = 1000;

/// Mail prepared in memory, written in one go (`Directory::send_prepared`).
#[derive(Default)]
pub(crate) struct Outgoing {
    tokens: Vec<cairn_store::NewToken>,
    messages: Vec<OutboxMessage>,
}

impl Directory {
    // ---- mail ---------------------------------------------------------------------------

    /// Composes a message (and the one-time link it carries) into `out`, in memory; many can
    /// be prepared and then written together by `send_prepared`.
    pub(crate) fn prepare_mail(&self, out: &mut Outgoing, org: &str, kind: MailKind, user: &User, to: &str) {
        let now = self.now();
        let base = &self.config().base_url;
        let (link, valid) = match kind {
            MailKind::Activation | MailKind::PasswordReset => {
                let (token_kind, validity, path, valid) = if kind == MailKind::Activation {
                    ("activation", ACTIVATION_VALIDITY, "activate", "7 days")
                } else {
                    ("reset", RESET_VALIDITY, "reset", "1 hour")
                };
                let token = link_token(&self.new_id());
                out.tokens.push((link_key(&token), user.id.clone(), token_kind.to_string(), now, now + validity));
                (format!("{base}/portal/{path}?token={token}"), valid)
            }
            MailKind::Welcome | MailKind::TotpReset => (format!("{base}/portal/login"), ""),
        };
        // Kept as the template's parameters, rendered when read or sent.
        let params = MailParams::new(org, user, &link, valid);
        let status = if self.config().smtp.is_some() { "queued" } else { "logged" };
        out.messages.push(OutboxMessage {
            id: self.new_id(),
            created: now,
            kind: kind.as_str().into(),
            to: to.into(),
            user_id: Some(user.id.clone()),
            subject: String::new(),
            text: String::new(),
            html: String::new(),
            status: status.into(),
            attempts: 0,
            next_attempt: now,
            sent: None,
            last_error: None,
            params: Some(params),
        });
    }

    /// Writes prepared mail in the caller's transaction: each new link replaces the user's
    /// earlier ones of its kind; messages go to the outbox (`queued` with SMTP, else `logged`).
    pub(crate) async fn send_prepared(&self, db: &mut Db<'_>, out: Outgoing) -> Result<()> {
        for kind in ["activation", "reset"] {
            let users: Vec<String> = out.tokens.iter().filter(|t| t.2 == kind).map(|t| t.1.clone()).collect();
            if !users.is_empty() {
                db.delete_tokens_of(&users, kind).await?;
            }
        }
        db.insert_tokens(&out.tokens).await?;
        db.insert_messages(&out.messages).await?;
        Ok(())
    }

    /// The mail new users get on creation (an activation link to those created ACTIVATED
    /// without a password, §5.2), written in the caller's transaction in one go.
    pub(crate) async fn mail_new_users<'a>(
        &self,
        db: &mut Db<'_>,
        org: &str,
        users: impl IntoIterator<Item = &'a User>,
        mail: &cairn_domain::lifecycle::MailChoice,
    ) -> Result<()> {
        Ok(db.execute_prepared(self.prepare_new_users_mail(org, users, mail)).await?)
    }

    /// The statements of `mail_new_users`, bound ahead of the transaction (imports bind a
    /// batch's while the one before is written). New users have no earlier links to end.
    pub(crate) fn prepare_new_users_mail<'a>(
        &self,
        org: &str,
        users: impl IntoIterator<Item = &'a User>,
        mail: &cairn_domain::lifecycle::MailChoice,
    ) -> cairn_store::Prepared {
        let mut out = Outgoing::default();
        for u in users {
            if let Some((kind, to)) = cairn_domain::mail::on_activation(u, mail) {
                self.prepare_mail(&mut out, org, kind, u, &to);
            }
        }
        self.store().prepare_mail(&out.tokens, &out.messages)
    }

    /// Sends `kind` to `to` with a fresh link, in the caller's transaction.
    pub(crate) async fn mail_user(&self, db: &mut Db<'_>, user: &User, kind: MailKind, to: &str) -> Result<()> {
        let org = crate::org_of(db).await?;
        let mut out = Outgoing::default();
        self.prepare_mail(&mut out, &org.settings.name, kind, user, to);
        self.send_prepared(db, out).await
    }

    /// Prunes the outbox of messages past `outbox_retention` (delivered or logged), a thousand
    /// per transaction so writers never wait long behind it; answers how many went.
    pub async fn prune_outbox(&self) -> Result<u64> {
        let Some(keep) = self.config().outbox_retention else { return Ok(0) };
        let before = self.now() - keep;
        let mut total = 0;
        loop {
            let mut tx = self.store().begin().await?;
            let n = tx.db().prune_messages(before, PRUNE_BATCH).await?;
            tx.commit().await?;
            total += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
