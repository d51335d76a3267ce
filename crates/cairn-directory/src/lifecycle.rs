//! State changes (§3.3): activate, suspend, and what they do to sessions and tokens.

use cairn_domain::lifecycle::{transition, MailChoice};
use cairn_domain::user::Change;
use cairn_domain::{State, User};
use cairn_store::Db;
use serde_json::{json, Value};

use crate::error::Result;
use crate::users::load_user;
use crate::{Ctx, Directory};

/// What a state change did.
#[derive(Debug, Clone)]
pub enum StateOutcome {
    Changed(User),
    /// Already in the target state: nothing was done.
    Unchanged(User),
}

impl StateOutcome {
    pub fn user(&self) -> &User {
        match self {
            StateOutcome::Changed(u) | StateOutcome::Unchanged(u) => u,
        }
    }
}

impl Directory {
    /// Activates now (STAGED or SUSPENDED → ACTIVATED); `mail` is JumpCloud's `email` flag.
    pub async fn activate(&self, ctx: &Ctx, id: &str, mail: MailChoice) -> Result<StateOutcome> {
        self.set_state(ctx, id, State::Activated, mail).await
    }

    /// Suspends now; every session and token of the user ends in the same transaction.
    pub async fn suspend(&self, ctx: &Ctx, id: &str) -> Result<StateOutcome> {
        self.set_state(ctx, id, State::Suspended, MailChoice::None).await
    }

    pub async fn set_state(&self, ctx: &Ctx, id: &str, to: State, mail: MailChoice) -> Result<StateOutcome> {
        let mut tx = self.store().begin().await?;
        let user = load_user(&mut tx.db(), id).await?;
        let out = self.apply_state(&mut tx.db(), ctx, user, to, mail, json!({})).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The one place a state changes: checks the transition, writes the user, revokes access
    /// on suspension, and records the event, all in the caller's transaction.
    pub(crate) async fn apply_state(
        &self,
        db: &mut Db<'_>,
        ctx: &Ctx,
        user: User,
        to: State,
        mail: MailChoice,
        detail: Value,
    ) -> Result<StateOutcome> {
        if !transition(user.state, to)? {
            return Ok(StateOutcome::Unchanged(user));
        }
        let from = user.state;
        let mut new = user.clone();
        new.state = to;
        new.updated = self.now();
        db.update_user(&new).await?;
        let revoked = if to == State::Suspended { db.revoke_user_access(&new.id).await? } else { 0 };
        let mut detail = detail;
        detail["from"] = json!(from);
        detail["to"] = json!(to);
        if to == State::Activated {
            detail["email"] = serde_json::to_value(&mail).expect("mail choice serializes");
            // §3.3: a reactivated (formerly suspended) user gets mail only when asked.
            let asked = !(from == State::Suspended && mail == MailChoice::Default);
            if let Some((kind, to_addr)) = cairn_domain::mail::on_activation(&new, &mail).filter(|_| asked) {
                self.mail_user(db, &new, kind, &to_addr).await?;
                detail["mail"] = json!({ "type": kind, "to": to_addr });
            }
        }
        if to == State::Suspended {
            detail["revoked_sessions_and_tokens"] = json!(revoked);
        }
        let action = if to == State::Activated { "user_activate" } else { "user_suspend" };
        let changes = vec![Change { field: "state".into(), old: json!(from), new: json!(to) }];
        let ev = self.event(ctx, action, Some(("user", &new.id, &new.username)), changes, detail);
        db.insert_event(&ev).await?;
        Ok(StateOutcome::Changed(new))
    }
}
