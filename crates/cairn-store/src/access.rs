//! What `Directory::authenticate` reads and writes: accounts locked for a read-modify-write,
//! the lockout columns alone, the last TOTP step used, and the sign-in step tickets (rows of
//! the session tables). Users and administrators keep the same columns for these, so one set
//! of queries serves both.

use cairn_domain::lockout::Lockout;
use cairn_domain::{Admin, User};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::admins::{AdminExtras, ADMIN_SESSIONS};
use crate::credentials::{SessionTable, USER_SESSIONS};
use crate::rows::{self, get_opt_text, get_text, parse_time};
use crate::{time_text, Backend, Db, Result};

/// Whose credentials: a user's (`users`) or an administrator's (`admins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    User,
    Admin,
}

impl Account {
    fn table(self) -> &'static str {
        match self {
            Account::User => "users",
            Account::Admin => "admins",
        }
    }
    fn name_column(self) -> &'static str {
        match self {
            Account::User => "username",
            Account::Admin => "email",
        }
    }
    fn sessions(self) -> SessionTable {
        match self {
            Account::User => USER_SESSIONS,
            Account::Admin => ADMIN_SESSIONS,
        }
    }
}

/// ` FOR UPDATE` on PostgreSQL: the row stays locked until the transaction ends, so a
/// concurrent change (a suspension, another failed login) waits instead of being overwritten.
/// SQLite needs nothing: its write transactions (`BEGIN IMMEDIATE`) already run one at a time.
pub(crate) fn for_update(b: Backend) -> &'static str {
    match b {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}

/// A sign-in step ticket: whose, and what the step carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub owner: String,
    pub kind: String,
    pub expires: DateTime<Utc>,
    pub data: Value,
}

impl Db<'_> {
    /// The user, with its row locked until the transaction ends (every read-modify-write of a
    /// user reads it this way).
    pub async fn lock_user(&mut self, id: &str) -> Result<Option<User>> {
        let sql = format!("SELECT * FROM users WHERE id = $1{}", for_update(self.b));
        let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| rows::user_from_row(&r)).transpose()
    }

    /// The administrator with what the portal keeps beside the record, row locked.
    pub async fn lock_admin(&mut self, id: &str) -> Result<Option<(Admin, AdminExtras)>> {
        let sql = format!("SELECT * FROM admins WHERE id = $1{}", for_update(self.b));
        let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| Ok((rows::admin_from_row(&r)?, crate::admins::extras_from_row(&r)?))).transpose()
    }

    /// Writes the lockout columns only (the rest of the row is not the sign-in's to write).
    pub async fn set_lockout(&mut self, account: Account, id: &str, l: &Lockout) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET badloginattempts = $2, account_locked = $3, account_locked_date = $4 WHERE id = $1",
            account.table()
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .bind(l.failures)
            .bind(l.locked)
            .bind(l.locked_at.map(time_text))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    /// Records `step` (a TOTP time step) as used; false when it or a later one already was,
    /// so a code is accepted once (RFC 6238 §5.2).
    pub async fn claim_totp_step(&mut self, account: Account, id: &str, step: i64) -> Result<bool> {
        let sql = format!(
            "UPDATE {} SET totp_last_step = $2 WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
            account.table()
        );
        let r = sqlx::query(&sql).bind(id.to_string()).bind(step).execute(&mut *self.c).await?;
        Ok(r.rows_affected() == 1)
    }

    /// Forgets the last TOTP step (a new authenticator starts over).
    pub async fn clear_totp_step(&mut self, account: Account, id: &str) -> Result<()> {
        let sql = format!("UPDATE {} SET totp_last_step = NULL WHERE id = $1", account.table());
        sqlx::query(&sql).bind(id.to_string()).execute(&mut *self.c).await?;
        Ok(())
    }

    /// Opens every lock set at or before `cutoff`: (id, name) of each account opened. Each
    /// row is opened by exactly one caller, however many processes sweep at once.
    pub async fn unlock_locked_before(
        &mut self,
        account: Account,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>> {
        let sql = format!(
            "UPDATE {t} SET account_locked = FALSE, account_locked_date = NULL, badloginattempts = 0 \
             WHERE account_locked AND account_locked_date <= $1 RETURNING id, {n}",
            t = account.table(),
            n = account.name_column()
        );
        let rows = sqlx::query(&sql).bind(time_text(cutoff)).fetch_all(&mut *self.c).await?;
        rows.iter().map(|r| Ok((get_text(r, "id")?, get_text(r, account.name_column())?))).collect()
    }

    /// Whether any lock was set at or before `cutoff` (a read, so the sweep writes only when
    /// there is something to open).
    pub async fn any_locked_before(&mut self, account: Account, cutoff: DateTime<Utc>) -> Result<bool> {
        let sql =
            format!("SELECT id FROM {} WHERE account_locked AND account_locked_date <= $1 LIMIT 1", account.table());
        Ok(sqlx::query(&sql).bind(time_text(cutoff)).fetch_optional(&mut *self.c).await?.is_some())
    }

    /// Ends every session (and pending sign-in step) of an account; the number ended.
    pub async fn revoke_sessions(&mut self, account: Account, id: &str) -> Result<u64> {
        let t = account.sessions();
        let sql = format!("DELETE FROM {} WHERE {} = $1", t.table, t.owner);
        let n = sqlx::query(&sql).bind(id.to_string()).execute(&mut *self.c).await?.rows_affected();
        // A user's applications lose their tokens with the sessions (a lock, §3.5).
        let apps = if account == Account::User { self.revoke_oidc_of_user(id).await? } else { 0 };
        Ok(n + apps)
    }

    /// Stores a sign-in step ticket (by the hash of its value).
    pub async fn put_ticket(&mut self, account: Account, hash: &str, t: &Ticket, created: DateTime<Utc>) -> Result<()> {
        self.put_session_row(account.sessions(), hash, &t.owner, &t.kind, created, t.expires, &t.data).await
    }

    /// The unexpired ticket of `kind` with this hash.
    pub async fn ticket(
        &mut self,
        account: Account,
        hash: &str,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Ticket>> {
        let t = account.sessions();
        let sql = format!("SELECT * FROM {} WHERE id = $1 AND kind = $2 AND expires > $3", t.table);
        let row = sqlx::query(&sql)
            .bind(hash.to_string())
            .bind(kind.to_string())
            .bind(time_text(now))
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| {
            Ok(Ticket {
                owner: get_text(&r, t.owner)?,
                kind: get_text(&r, "kind")?,
                expires: parse_time(&get_text(&r, "expires")?)?,
                data: get_opt_text(&r, "data")?.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null),
            })
        })
        .transpose()
    }

    /// Deletes a ticket; true when it was there (a ticket is used once).
    pub async fn take_ticket(&mut self, account: Account, hash: &str) -> Result<bool> {
        let t = account.sessions();
        let sql = format!("DELETE FROM {} WHERE id = $1", t.table);
        Ok(sqlx::query(&sql).bind(hash.to_string()).execute(&mut *self.c).await?.rows_affected() == 1)
    }

    /// Reset mails sent to `to` since `since` (the per-account limit on self-service resets).
    pub async fn count_mail_since(&mut self, to: &str, kind: &str, since: DateTime<Utc>) -> Result<i64> {
        rows::get_i64(
            &sqlx::query("SELECT COUNT(*) FROM outbox WHERE to_addr = $1 AND kind = $2 AND created >= $3")
                .bind(to.to_string())
                .bind(kind.to_string())
                .bind(time_text(since))
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )
    }
}
