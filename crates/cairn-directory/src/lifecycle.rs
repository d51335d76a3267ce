//! State changes (§3.3): activate, suspend, and what they do to sessions and tokens.

use cairn_domain::lifecycle::{transition, MailChoice};
use cairn_domain::user::Change;
use cairn_domain::{State, User};
use cairn_store::Db;
use serde_json::{json, Value};

use crate::error::Result;
use crate::load::load_user;
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
    /// on suspension, mails per §5.2 and records the event, all in the caller's transaction.
    pub(crate) async fn apply_state(
        &self,
        db: &mut Db<'_>,
        ctx: &Ctx,
        user: User,
        to: State,
        mail: MailChoice,
        detail: Value,
    ) -> Result<StateOutcome> {
        let mut out = self.apply_states(db, ctx, vec![StateChange { user, to, mail, detail }]).await?;
        Ok(out.pop().expect("one outcome per change"))
    }

    /// `apply_state` for many users at once with a few statements in all (the scheduler
    /// fires its batches through here). Refuses the whole batch if one transition is refused.
    pub(crate) async fn apply_states(
        &self,
        db: &mut Db<'_>,
        ctx: &Ctx,
        changes: Vec<StateChange>,
    ) -> Result<Vec<StateOutcome>> {
        let now = self.now();
        let mut result: Vec<Option<StateOutcome>> = Vec::with_capacity(changes.len());
        // (position in the result, user, target, mail choice, event detail)
        let mut moved: Vec<(usize, User, State, MailChoice, Value)> = vec![];
        for (i, c) in changes.into_iter().enumerate() {
            if transition(c.user.state, c.to)? {
                moved.push((i, c.user, c.to, c.mail, c.detail));
                result.push(None);
            } else {
                result.push(Some(StateOutcome::Unchanged(c.user)));
            }
        }
        for to in [State::Activated, State::Suspended] {
            let ids: Vec<String> = moved.iter().filter(|m| m.2 == to).map(|m| m.1.id.clone()).collect();
            if !ids.is_empty() {
                db.set_users_state(&ids, to, now).await?;
            }
        }
        let suspended: Vec<String> = moved.iter().filter(|m| m.2 == State::Suspended).map(|m| m.1.id.clone()).collect();
        let revoked =
            if suspended.is_empty() { Default::default() } else { db.revoke_users_access(&suspended).await? };
        let org = if moved.iter().any(|m| m.2 == State::Activated) {
            Some(crate::org_of(db).await?.settings.name)
        } else {
            None
        };
        let mut mail_out = crate::outbox::Outgoing::default();
        let mut events = Vec::with_capacity(moved.len());
        for (pos, user, to, mail, mut detail) in moved {
            let from = user.state;
            let mut new = user;
            new.state = to;
            new.updated = now;
            detail["from"] = json!(from);
            detail["to"] = json!(to);
            if to == State::Activated {
                detail["email"] = serde_json::to_value(&mail).expect("mail choice serializes");
                // §3.3: a reactivated (formerly suspended) user gets mail only when asked.
                let asked = !(from == State::Suspended && mail == MailChoice::Default);
                if let Some((kind, to_addr)) = cairn_domain::mail::on_activation(&new, &mail).filter(|_| asked) {
                    self.prepare_mail(&mut mail_out, org.as_deref().unwrap_or("Cairn"), kind, &new, &to_addr);
                    detail["mail"] = json!({ "type": kind, "to": to_addr });
                }
            } else {
                detail["revoked_sessions_and_tokens"] = json!(revoked.get(&new.id).copied().unwrap_or(0));
            }
            let action = if to == State::Activated { "user_activate" } else { "user_suspend" };
            let changes = vec![Change { field: "state".into(), old: json!(from), new: json!(to) }];
            events.push(self.event(ctx, action, Some(("user", &new.id, &new.username)), changes, detail));
            result[pos] = Some(StateOutcome::Changed(new));
        }
        self.send_prepared(db, mail_out).await?;
        db.insert_events(&events).await?;
        Ok(result.into_iter().map(|o| o.expect("every change has an outcome")).collect())
    }
}

/// One state change for `apply_states`.
pub(crate) struct StateChange {
    pub user: User,
    pub to: State,
    pub mail: MailChoice,
    pub detail: Value,
}
