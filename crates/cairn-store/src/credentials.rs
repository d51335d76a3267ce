//! Queries for mail, one-time tokens and sessions.

use cairn_domain::OutboxQuery;
use cairn_domain::{OutboxMessage, Session};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::any::AnyRow;

use crate::rows::{get_i64, get_opt_text, get_text, parse_time};
use crate::{time_text, Args, Backend, Db, Result};

fn opt_time(r: &AnyRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    get_opt_text(r, col)?.map(|s| parse_time(&s)).transpose()
}

fn message_from_row(r: &AnyRow) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: get_text(r, "id")?,
        created: parse_time(&get_text(r, "created")?)?,
        kind: get_text(r, "kind")?,
        to: get_text(r, "to_addr")?,
        user_id: get_opt_text(r, "user_id")?,
        subject: get_text(r, "subject")?,
        text: get_text(r, "body_text")?,
        html: get_text(r, "body_html")?,
        status: get_text(r, "status")?,
        attempts: get_i64(r, "attempts")?,
        next_attempt: parse_time(&get_text(r, "next_attempt")?)?,
        sent: opt_time(r, "sent")?,
        last_error: get_opt_text(r, "last_error")?,
        params: get_opt_text(r, "params")?.and_then(|p| serde_json::from_str(&p).ok()),
    })
}

fn params_text(m: &OutboxMessage) -> Option<String> {
    m.params.as_ref().map(|p| serde_json::to_string(p).expect("mail parameters serialize"))
}

/// User and admin sessions live in two tables of one shape, told apart by their owner column.
#[derive(Clone, Copy)]
pub(crate) struct SessionTable {
    pub(crate) table: &'static str,
    pub(crate) owner: &'static str,
}

pub(crate) const USER_SESSIONS: SessionTable = SessionTable { table: "sessions", owner: "user_id" };

/// (id, owner, kind, created, expires, data).
pub(crate) type SessionRow = (String, String, String, DateTime<Utc>, DateTime<Utc>, Value);

impl Db<'_> {
    pub async fn insert_message(&mut self, m: &OutboxMessage) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox (id, created, kind, to_addr, user_id, subject, body_text, body_html, status, attempts, next_attempt, sent, last_error, params) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(m.id.clone())
        .bind(time_text(m.created))
        .bind(m.kind.clone())
        .bind(m.to.clone())
        .bind(m.user_id.clone())
        .bind(m.subject.clone())
        .bind(m.text.clone())
        .bind(m.html.clone())
        .bind(m.status.clone())
        .bind(m.attempts)
        .bind(time_text(m.next_attempt))
        .bind(m.sent.map(time_text))
        .bind(m.last_error.clone())
        .bind(params_text(m))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn list_messages(&mut self, q: &OutboxQuery) -> Result<(i64, Vec<OutboxMessage>)> {
        let mut a = Args::default();
        let mut clauses = vec![];
        for (col, v) in [("to_addr", &q.to), ("kind", &q.kind), ("status", &q.status), ("user_id", &q.user_id)] {
            if let Some(v) = v {
                clauses.push(format!("{col} = {}", a.push(v.clone())));
            }
        }
        let w = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let total = get_i64(
            &sqlx::query_with(&format!("SELECT COUNT(*) FROM outbox{w}"), a.build()).fetch_one(&mut *self.c).await?,
            0,
        )?;
        let lim = a.push(q.limit);
        let off = a.push(q.skip);
        let rows =
            sqlx::query_with(&format!("SELECT * FROM outbox{w} ORDER BY id DESC LIMIT {lim} OFFSET {off}"), a.build())
                .fetch_all(&mut *self.c)
                .await?;
        Ok((total, rows.iter().map(message_from_row).collect::<Result<_>>()?))
    }

    /// Claims queued messages that are due for one delivery attempt each: their status becomes
    /// `sending` with a lease, committed before anything is sent, so no other process sends
    /// them too.
    pub async fn claim_messages(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxMessage>> {
        let lock = match self.b {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET status = 'sending', claimed_until = $2, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM outbox WHERE status = 'queued' AND next_attempt <= $1 ORDER BY next_attempt, id LIMIT $3{lock}) RETURNING *"
        );
        let rows = sqlx::query(&sql)
            .bind(time_text(now))
            .bind(time_text(lease_until))
            .bind(limit)
            .fetch_all(&mut *self.c)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Records the result of a delivery attempt: `sent`, `failed`, or `queued` again at
    /// `next_attempt` for a retry. The bodies (or parameters) of sent messages are replaced by
    /// `scrubbed` ones so the stored copy no longer carries a usable token.
    pub async fn finish_message(
        &mut self,
        id: &str,
        status: &str,
        at: DateTime<Utc>,
        next_attempt: DateTime<Utc>,
        error: Option<&str>,
        scrubbed: Option<&OutboxMessage>,
    ) -> Result<()> {
        let sent = (status == "sent").then(|| time_text(at));
        sqlx::query(
            "UPDATE outbox SET status = $2, sent = $3, next_attempt = $4, last_error = $5, claimed_until = NULL, \
             body_text = COALESCE($6, body_text), body_html = COALESCE($7, body_html), params = COALESCE($8, params) \
             WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(status.to_string())
        .bind(sent)
        .bind(time_text(next_attempt))
        .bind(error.map(str::to_string))
        .bind(scrubbed.map(|s| s.text.clone()))
        .bind(scrubbed.map(|s| s.html.clone()))
        .bind(scrubbed.and_then(params_text))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// Messages left `sending` by a process that died mid-delivery: whether they went out is
    /// unknown, so they are failed rather than sent again (at most once).
    pub async fn fail_abandoned_messages(&mut self, now: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE outbox SET status = 'failed', last_error = 'delivery was interrupted; not retried so that it is never sent twice', \
             claimed_until = NULL WHERE status = 'sending' AND claimed_until < $1",
        )
        .bind(time_text(now))
        .execute(&mut *self.c)
        .await?;
        Ok(r.rows_affected())
    }

    /// Deletes up to `limit` messages delivered (`sent`) or kept without SMTP (`logged`) before
    /// `before`; answers how many went. `next_attempt` holds the delivery instant of a sent
    /// message and the creation of a logged one, so the status index answers the query.
    /// Queued, sending and failed messages stay whatever their age.
    pub async fn prune_messages(&mut self, before: DateTime<Utc>, limit: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status IN ('sent', 'logged') \
             AND next_attempt < $1 LIMIT $2)",
        )
        .bind(time_text(before))
        .bind(limit)
        .execute(&mut *self.c)
        .await?;
        Ok(r.rows_affected())
    }

    /// One sealed TOTP secret of a user or an administrator, if any is stored: enough to tell
    /// whether a key is the one they were sealed with.
    pub async fn any_sealed_totp(&mut self) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT totp_secret FROM users WHERE totp_secret IS NOT NULL \
             UNION ALL SELECT totp_secret FROM admins WHERE totp_secret IS NOT NULL LIMIT 1",
        )
        .fetch_optional(&mut *self.c)
        .await?;
        row.map(|r| get_text(&r, 0)).transpose()
    }

    pub async fn count_messages(&mut self, status: &str) -> Result<i64> {
        get_i64(
            &sqlx::query("SELECT COUNT(*) FROM outbox WHERE status = $1")
                .bind(status.to_string())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )
    }

    // ---- one-time tokens ----------------------------------------------------------------

    pub async fn insert_token(
        &mut self,
        hash: &str,
        user_id: &str,
        kind: &str,
        created: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_tokens (token_hash, user_id, kind, created, expires) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash.to_string())
        .bind(user_id.to_string())
        .bind(kind.to_string())
        .bind(time_text(created))
        .bind(time_text(expires))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// Deletes a user's tokens of one kind (a new link replaces the old ones).
    pub async fn delete_tokens(&mut self, user_id: &str, kind: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM user_tokens WHERE user_id = $1 AND kind = $2")
            .bind(user_id.to_string())
            .bind(kind.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected())
    }

    /// The user a token belongs to, if it is of `kind` and unexpired at `now`. Does not consume.
    pub async fn token_user(&mut self, hash: &str, kind: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let row = sqlx::query("SELECT user_id FROM user_tokens WHERE token_hash = $1 AND kind = $2 AND expires > $3")
            .bind(hash.to_string())
            .bind(kind.to_string())
            .bind(time_text(now))
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| get_text(&r, "user_id")).transpose()
    }

    /// Consumes a token: deletes it and returns its user, once.
    pub async fn take_token(&mut self, hash: &str, kind: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let row = sqlx::query(
            "DELETE FROM user_tokens WHERE token_hash = $1 AND kind = $2 AND expires > $3 RETURNING user_id",
        )
        .bind(hash.to_string())
        .bind(kind.to_string())
        .bind(time_text(now))
        .fetch_optional(&mut *self.c)
        .await?;
        row.map(|r| get_text(&r, "user_id")).transpose()
    }

    // ---- sessions -----------------------------------------------------------------------

    pub async fn put_session(&mut self, s: &Session) -> Result<()> {
        self.put_session_row(USER_SESSIONS, &s.id, &s.user_id, &s.kind, s.created, s.expires, &s.data).await
    }

    pub async fn get_session(&mut self, id: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        let row = self.get_session_row(USER_SESSIONS, id, now).await?;
        Ok(row.map(|(id, user_id, kind, created, expires, data)| Session { id, user_id, kind, created, expires, data }))
    }

    pub async fn delete_session(&mut self, id: &str) -> Result<()> {
        self.delete_session_row(USER_SESSIONS, id).await
    }

    /// Writes (or replaces) a session row of a user's or an admin's session table.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put_session_row(
        &mut self,
        t: SessionTable,
        id: &str,
        owner: &str,
        kind: &str,
        created: DateTime<Utc>,
        expires: DateTime<Utc>,
        data: &Value,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (id, {}, kind, created, expires, data) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, expires = excluded.expires, data = excluded.data",
            t.table, t.owner
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .bind(owner.to_string())
            .bind(kind.to_string())
            .bind(time_text(created))
            .bind(time_text(expires))
            .bind(data.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    /// The unexpired session row with this id: (id, owner, kind, created, expires, data).
    pub(crate) async fn get_session_row(
        &mut self,
        t: SessionTable,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRow>> {
        let sql = format!("SELECT * FROM {} WHERE id = $1 AND expires > $2", t.table);
        let row = sqlx::query(&sql).bind(id.to_string()).bind(time_text(now)).fetch_optional(&mut *self.c).await?;
        row.map(|r| {
            Ok((
                get_text(&r, "id")?,
                get_text(&r, t.owner)?,
                get_text(&r, "kind")?,
                parse_time(&get_text(&r, "created")?)?,
                parse_time(&get_text(&r, "expires")?)?,
                get_opt_text(&r, "data")?.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null),
            ))
        })
        .transpose()
    }

    pub(crate) async fn delete_session_row(&mut self, t: SessionTable, id: &str) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE id = $1", t.table);
        sqlx::query(&sql).bind(id.to_string()).execute(&mut *self.c).await?;
        Ok(())
    }
}
