//! Many rows at once (imports, bulk jobs): multi-row INSERTs, and the jobs with their results.

use cairn_domain::{Event, User};
use cairn_domain::{Job, JobResult};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::any::AnyRow;

use crate::rows::{self, get_i64, get_opt_text, get_text, parse_time};
use sqlx::any::AnyArguments;

use crate::{map_unique, time_text, Arg, Args, Backend, Db, Result};

/// A one-time token to store: (hash, user id, kind, created, expires).
pub type NewToken = (String, String, String, DateTime<Utc>, DateTime<Utc>);

/// A job's progress, as written after every batch.
#[derive(Debug, Clone, Copy)]
pub struct JobUpdate<'a> {
    pub status: &'a str,
    pub processed: i64,
    pub total: i64,
    pub counts: &'a Value,
    pub message: Option<&'a str>,
}

/// Events' changes and details as JSON text, one of each per event: an import writes
/// 100,000s, most sharing one detail text (each run of equal details is bound once).
pub struct EventTexts {
    pub changes: Vec<String>,
    pub details: Vec<std::sync::Arc<str>>,
}

/// What tells users apart: an import checking which of its users exist reads only these.
#[derive(Debug, Clone, PartialEq)]
pub struct UserKeys {
    pub id: String,
    pub username: String,
    pub email: String,
}

fn job_from_row(r: &AnyRow) -> Result<Job> {
    let json = |c: &str| -> Result<Value> { Ok(serde_json::from_str(&get_text(r, c)?).unwrap_or(Value::Null)) };
    Ok(Job {
        id: get_text(r, "id")?,
        kind: get_text(r, "kind")?,
        status: get_text(r, "status")?,
        created: parse_time(&get_text(r, "created")?)?,
        updated: parse_time(&get_text(r, "updated")?)?,
        created_by: json("created_by")?,
        params: json("params")?,
        total: get_i64(r, "total")?,
        processed: get_i64(r, "processed")?,
        counts: json("counts")?,
        message: get_opt_text(r, "message")?,
    })
}

impl Db<'_> {
    /// Inserts many users with multi-row statements (a unique conflict fails the call).
    pub async fn insert_users(&mut self, users: &[User]) -> Result<()> {
        for (sql, args, _) in users_insert(self.b, users, false).0 {
            sqlx::query_with(&sql, args).execute(&mut *self.c).await.map_err(map_unique)?;
        }
        Ok(())
    }

    /// Inserts the users no other user conflicts with (username, email, employee id); the
    /// others are left out, untouched. `None` when every user was inserted, else the ids of
    /// those that were.
    pub async fn insert_new_users(
        &mut self,
        users: &[User],
        insert: Prepared,
    ) -> Result<Option<std::collections::HashSet<String>>> {
        let mut n = 0;
        for (sql, args, _) in insert.0 {
            n += sqlx::query_with(&sql, args).execute(&mut *self.c).await?.rows_affected();
        }
        if n as usize == users.len() {
            return Ok(None);
        }
        Ok(Some(self.ids_present(users).await?))
    }

    /// Which of these users' ids are in the table.
    async fn ids_present(&mut self, users: &[User]) -> Result<std::collections::HashSet<String>> {
        let mut found = std::collections::HashSet::new();
        for chunk in users.chunks(500) {
            let mut a = Args::positional(self.b);
            let ps: Vec<String> = chunk.iter().map(|u| a.push(u.id.clone())).collect();
            let sql = format!("SELECT id FROM users WHERE id IN ({})", ps.join(", "));
            for r in sqlx::query_with(&sql, a.finish()).fetch_all(&mut *self.c).await? {
                found.insert(get_text(&r, "id")?);
            }
        }
        Ok(found)
    }

    /// Runs statements prepared ahead (see [`Prepared`]); each must write every row it was
    /// given, or the call fails (and its transaction must not commit).
    pub async fn execute_prepared(&mut self, p: Prepared) -> Result<()> {
        for (sql, args, rows) in p.0 {
            let n = sqlx::query_with(&sql, args).execute(&mut *self.c).await?.rows_affected();
            if n != rows {
                return Err(crate::StoreError::Incomplete(format!("{n} of {rows} rows written")));
            }
        }
        Ok(())
    }

    pub async fn insert_events(&mut self, events: &[Event]) -> Result<()> {
        self.execute_prepared(events_insert(self.b, events, None)).await
    }

    /// Writes these profile fields and `updated` of users that exist, a few thousand rows per
    /// statement, leaving their other columns as they are (an import's updates that change no
    /// unique key: nothing can conflict). Returns the ids of the users written: a user deleted
    /// meanwhile is not written back.
    pub async fn update_users_fields(
        &mut self,
        users: &[User],
        fields: &[&'static cairn_domain::fields::Field],
    ) -> Result<std::collections::HashSet<String>> {
        let width = 2 + fields.len();
        let mut n = 0;
        for chunk in users.chunks((PARAMS_PER_INSERT / width).max(1)) {
            let mut a = Args::positional(self.b);
            let mut rows_sql = Vec::with_capacity(chunk.len());
            for u in chunk {
                let mut ps = vec![a.push(u.id.clone()), a.push(rows::Value::Time(Some(u.updated)).into_arg())];
                for f in fields {
                    ps.push(a.push(rows::profile_value(u, f).into_arg()));
                }
                rows_sql.push(format!("({})", ps.join(", ")));
            }
            // VALUES columns are column1, column2, … on both databases.
            let sets: Vec<String> = std::iter::once("updated = v.column2".to_string())
                .chain(fields.iter().enumerate().map(|(i, f)| format!("{} = v.column{}", f.column, i + 3)))
                .collect();
            let sql = format!(
                "UPDATE users SET {} FROM (VALUES {}) AS v WHERE users.id = v.column1",
                sets.join(", "),
                rows_sql.join(", ")
            );
            n += sqlx::query_with(&sql, a.finish()).execute(&mut *self.c).await?.rows_affected();
        }
        if n as usize == users.len() {
            return Ok(users.iter().map(|u| u.id.clone()).collect());
        }
        self.ids_present(users).await
    }

    /// Sends every user matching `q` (no paging) down `tx`, streaming from the database so
    /// memory stays flat however many there are. Stops early when the receiver is gone.
    pub async fn each_user(
        &mut self,
        q: &cairn_domain::query::ListQuery,
        tx: &tokio::sync::mpsc::Sender<Result<User>>,
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        let mut a = Args::default();
        let where_sql = self.user_where_clause(q, &mut a);
        let order = crate::order_by(q);
        let sql = format!("SELECT * FROM users{where_sql} ORDER BY {order}");
        let mut rows = sqlx::query_with(&sql, a.build()).fetch(&mut *self.c);
        while let Some(r) = rows.try_next().await? {
            if tx.send(rows::user_from_row(&r)).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Existing users among these usernames and e-mails (both lowercase; usernames match
    /// whatever their stored case).
    pub async fn users_matching(&mut self, usernames: &[String], emails: &[String]) -> Result<Vec<UserKeys>> {
        let mut out = Vec::new();
        for (col, vals) in [("lower(username)", usernames), ("email", emails)] {
            for chunk in vals.chunks(500) {
                if chunk.is_empty() {
                    continue;
                }
                let mut a = Args::positional(self.b);
                let ps: Vec<String> = chunk.iter().map(|v| a.push(v.clone())).collect();
                let sql = format!("SELECT id, username, email FROM users WHERE {col} IN ({})", ps.join(", "));
                for r in sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await? {
                    out.push(UserKeys {
                        id: get_text(&r, "id")?,
                        username: get_text(&r, "username")?,
                        email: get_text(&r, "email")?,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// The users holding these employee identifiers (an update file keyed by them).
    pub async fn users_by_employee_ids(&mut self, ids: &[String]) -> Result<Vec<(String, UserKeys)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let mut a = Args::positional(self.b);
            let ps: Vec<String> = chunk.iter().map(|v| a.push(v.clone())).collect();
            let sql = format!(
                "SELECT id, username, email, employeeidentifier FROM users WHERE employeeidentifier IN ({})",
                ps.join(", ")
            );
            for r in sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await? {
                let keys = UserKeys {
                    id: get_text(&r, "id")?,
                    username: get_text(&r, "username")?,
                    email: get_text(&r, "email")?,
                };
                out.push((get_text(&r, "employeeidentifier")?, keys));
            }
        }
        Ok(out)
    }

    /// Existing employee identifiers among these.
    pub async fn employee_ids_taken(&mut self, ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let mut a = Args::positional(self.b);
            let ps: Vec<String> = chunk.iter().map(|v| a.push(v.clone())).collect();
            let sql = format!(
                "SELECT employeeidentifier, username FROM users WHERE employeeidentifier IN ({})",
                ps.join(", ")
            );
            for r in sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await? {
                out.push((get_text(&r, "employeeidentifier")?, get_text(&r, "username")?));
            }
        }
        Ok(out)
    }

    pub async fn add_members(&mut self, pairs: &[(String, String)], now: DateTime<Utc>) -> Result<()> {
        for chunk in pairs.chunks(1000) {
            let mut a = Args::positional(self.b);
            let vals: Vec<String> = chunk
                .iter()
                .map(|(g, u)| format!("({}, {}, {})", a.push(g.clone()), a.push(u.clone()), a.push(time_text(now))))
                .collect();
            let sql = format!(
                "INSERT INTO group_members (group_id, user_id, added) VALUES {} ON CONFLICT DO NOTHING",
                vals.join(", ")
            );
            sqlx::query_with(&sql, a.build()).execute(&mut *self.c).await?;
        }
        Ok(())
    }

    // ---- jobs ---------------------------------------------------------------------------

    pub async fn insert_job(&mut self, j: &Job) -> Result<()> {
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, created, updated, created_by, params, total, processed, counts, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(j.id.clone())
        .bind(j.kind.clone())
        .bind(j.status.clone())
        .bind(time_text(j.created))
        .bind(time_text(j.updated))
        .bind(j.created_by.to_string())
        .bind(j.params.to_string())
        .bind(j.total)
        .bind(j.processed)
        .bind(j.counts.to_string())
        .bind(j.message.clone())
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    pub async fn update_job(&mut self, id: &str, u: &JobUpdate<'_>, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE jobs SET status = $2, processed = $3, total = $4, counts = $5, message = $6, updated = $7 WHERE id = $1")
            .bind(id.to_string())
            .bind(u.status.to_string())
            .bind(u.processed)
            .bind(u.total)
            .bind(u.counts.to_string())
            .bind(u.message.map(str::to_string))
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    pub async fn get_job(&mut self, id: &str) -> Result<Option<Job>> {
        let row =
            sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// Jobs still queued or running whose last progress is older than `cutoff`: their process
    /// stopped (running jobs record progress after every batch).
    pub async fn interrupt_jobs(&mut self, now: DateTime<Utc>, cutoff: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'interrupted', updated = $1, message = 'the server stopped while this job ran: \
             re-run the same input to finish (nothing is created twice)' WHERE status IN ('queued', 'running') AND updated <= $2",
        )
        .bind(time_text(now))
        .bind(time_text(cutoff))
        .execute(&mut *self.c)
        .await?;
        Ok(r.rows_affected())
    }

    /// Takes an interrupted job up again (running); false when it is not interrupted (any
    /// more: another process took it).
    pub async fn resume_job(&mut self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'running', updated = $2, message = 'resumed after the server restarted' \
             WHERE id = $1 AND status = 'interrupted'",
        )
        .bind(id.to_string())
        .bind(time_text(now))
        .execute(&mut *self.c)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn insert_job_results(&mut self, job_id: &str, results: &[JobResult]) -> Result<()> {
        self.execute_prepared(job_results_insert(self.b, job_id, results)).await
    }

    /// Results in record order; `outcome` filters.
    pub async fn job_results(
        &mut self,
        job_id: &str,
        outcome: Option<&str>,
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<JobResult>)> {
        let total = get_i64(
            &sqlx::query("SELECT COUNT(*) FROM job_results WHERE job_id = $1 AND ($2 IS NULL OR outcome = $2)")
                .bind(job_id.to_string())
                .bind(outcome.map(str::to_string))
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        let rows = sqlx::query("SELECT * FROM job_results WHERE job_id = $1 AND ($2 IS NULL OR outcome = $2) ORDER BY seq LIMIT $3 OFFSET $4")
            .bind(job_id.to_string())
            .bind(outcome.map(str::to_string))
            .bind(limit)
            .bind(skip)
            .fetch_all(&mut *self.c)
            .await?;
        let list = rows
            .iter()
            .map(|r| {
                Ok(JobResult {
                    seq: get_i64(r, "seq")?,
                    username: get_opt_text(r, "username")?,
                    user_id: get_opt_text(r, "user_id")?,
                    outcome: get_text(r, "outcome")?,
                    message: get_opt_text(r, "message")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok((total, list))
    }
}

impl Db<'_> {
    /// Users by id, in no particular order; missing ids are simply absent.
    /// These users, locked for the caller's transaction (read-modify-write: see
    /// [`Db::lock_user`]); rows are locked in id order, so two batches cannot deadlock.
    pub async fn users_by_ids(&mut self, ids: &[String]) -> Result<Vec<User>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut sorted: Vec<&String> = ids.iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        let lock = crate::for_update(self.b);
        for chunk in sorted.chunks(500) {
            let mut a = Args::positional(self.b);
            let ps: Vec<String> = chunk.iter().map(|v| a.push((*v).clone())).collect();
            let sql = format!("SELECT * FROM users WHERE id IN ({}) ORDER BY id{lock}", ps.join(", "));
            for r in sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await? {
                out.push(rows::user_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// Moves these users to `state` in one statement per chunk.
    pub async fn set_users_state(
        &mut self,
        ids: &[String],
        state: cairn_domain::State,
        now: DateTime<Utc>,
    ) -> Result<()> {
        for chunk in ids.chunks(500) {
            let mut a = Args::positional(self.b);
            let s = a.push(state.as_str().to_string());
            let t = a.push(time_text(now));
            let ps: Vec<String> = chunk.iter().map(|v| a.push(v.clone())).collect();
            let sql = format!("UPDATE users SET state = {s}, updated = {t} WHERE id IN ({})", ps.join(", "));
            sqlx::query_with(&sql, a.build()).execute(&mut *self.c).await?;
        }
        Ok(())
    }

    /// Deletes the sessions and one-time tokens of these users; how many each had.
    pub async fn revoke_users_access(&mut self, ids: &[String]) -> Result<std::collections::HashMap<String, u64>> {
        let mut counts = std::collections::HashMap::new();
        for table in ["sessions", "user_tokens", "oidc_codes", "oidc_tokens"] {
            for chunk in ids.chunks(500) {
                let mut a = Args::positional(self.b);
                let ps: Vec<String> = chunk.iter().map(|v| a.push(v.clone())).collect();
                let sql = format!("DELETE FROM {table} WHERE user_id IN ({}) RETURNING user_id", ps.join(", "));
                for r in sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await? {
                    *counts.entry(get_text(&r, "user_id")?).or_insert(0) += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Deletes these users' one-time tokens of one kind.
    pub async fn delete_tokens_of(&mut self, ids: &[String], kind: &str) -> Result<()> {
        for chunk in ids.chunks(500) {
            let mut a = Args::positional(self.b);
            let k = a.push(kind.to_string());
            let ps: Vec<String> = chunk.iter().map(|v| a.push(v.clone())).collect();
            let sql = format!("DELETE FROM user_tokens WHERE kind = {k} AND user_id IN ({})", ps.join(", "));
            sqlx::query_with(&sql, a.build()).execute(&mut *self.c).await?;
        }
        Ok(())
    }

    /// One-time tokens: (hash, user id, kind, created, expires).
    pub async fn insert_tokens(&mut self, tokens: &[NewToken]) -> Result<()> {
        self.execute_prepared(tokens_insert(self.b, tokens)).await
    }

    pub async fn insert_messages(&mut self, msgs: &[cairn_domain::OutboxMessage]) -> Result<()> {
        self.execute_prepared(messages_insert(self.b, msgs)).await
    }

    /// Marks these (claimed) schedules fired.
    pub async fn finish_schedules_fired(&mut self, ids: &[String], at: DateTime<Utc>) -> Result<()> {
        for chunk in ids.chunks(500) {
            let mut a = Args::positional(self.b);
            let t = a.push(time_text(at));
            let ps: Vec<String> = chunk.iter().map(|v| a.push(v.clone())).collect();
            let sql = format!(
                "UPDATE schedules SET status = 'fired', finished = {t} WHERE status IN ('pending', 'firing') AND id IN ({})",
                ps.join(", ")
            );
            sqlx::query_with(&sql, a.build()).execute(&mut *self.c).await?;
        }
        Ok(())
    }
}

/// SQLite's `INSERT OR IGNORE`: a multi-row INSERT that cannot abort halfway needs no statement
/// journal (a copy of every page it touches). Callers check that every row was written
/// ([`Db::execute_prepared`]), so nothing is skipped unnoticed.
fn or_ignore(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "INSERT OR IGNORE",
        Backend::Postgres => "INSERT",
    }
}

/// Multi-row INSERTs of `rows` into `into` (`table (column, …)`), `per_row` parameters each:
/// `bind` binds a row's values and answers its `(…)`.
fn rows_insert<T>(
    b: Backend,
    into: &str,
    rows: &[T],
    per_row: usize,
    mut bind: impl FnMut(&mut Args, &T) -> String,
) -> Prepared {
    let mut out = Prepared::default();
    for chunk in rows.chunks(PARAMS_PER_INSERT / per_row) {
        let mut a = Args::positional(b);
        let vals: Vec<String> = chunk.iter().map(|r| bind(&mut a, r)).collect();
        let sql = format!("{} INTO {into} VALUES {}", or_ignore(b), vals.join(", "));
        out.0.push((sql, a.build(), chunk.len() as u64));
    }
    out
}

/// Multi-row INSERTs of one-time tokens.
fn tokens_insert(b: Backend, tokens: &[NewToken]) -> Prepared {
    let into = "user_tokens (token_hash, user_id, kind, created, expires)";
    rows_insert(b, into, tokens, 5, |a, (h, u, k, c, e)| {
        let ps =
            [a.push(h.clone()), a.push(u.clone()), a.push(k.clone()), a.push(time_text(*c)), a.push(time_text(*e))];
        format!("({})", ps.join(", "))
    })
}

/// Multi-row INSERTs of outbox messages.
fn messages_insert(b: Backend, msgs: &[cairn_domain::OutboxMessage]) -> Prepared {
    let into = "outbox (id, created, kind, to_addr, user_id, subject, body_text, body_html, status, attempts, \
                next_attempt, params)";
    rows_insert(b, into, msgs, 12, |a, m| {
        let ps = [
            a.push(m.id.clone()),
            a.push(time_text(m.created)),
            a.push(m.kind.clone()),
            a.push(m.to.clone()),
            a.push(Arg::Text(m.user_id.clone())),
            a.push(m.subject.clone()),
            a.push(m.text.clone()),
            a.push(m.html.clone()),
            a.push(m.status.clone()),
            a.push(m.attempts),
            a.push(time_text(m.next_attempt)),
            a.push(Arg::Text(m.params.as_ref().map(|p| serde_json::to_string(p).expect("mail parameters serialize")))),
        ];
        format!("({})", ps.join(", "))
    })
}

/// Statements built ahead of the transaction that runs them, so that building them (binding
/// tens of thousands of values) overlaps the database writing the previous batch.
/// Parameters per multi-row INSERT (SQLite allows 32,766): enough rows per statement that the
/// per-statement work (each journals the pages it touches) is spread thin, small enough that
/// compiled statements stay a few MiB.
const PARAMS_PER_INSERT: usize = 8_000;

#[derive(Default)]
pub struct Prepared(pub(crate) Vec<(String, AnyArguments<'static>, u64)>);

/// Multi-row INSERTs for job results. Most results carry no message (`created`, `updated`):
/// those go in per outcome, the outcome bound once per statement like the job id; the others
/// with every value. `SELECT *, <job>, … FROM (VALUES …)` puts the constants' placeholders
/// first, so all are anonymous and in binding order.
fn job_results_insert(b: Backend, job_id: &str, results: &[JobResult]) -> Prepared {
    let mut plain: std::collections::BTreeMap<&str, Vec<&JobResult>> = Default::default();
    let mut other = vec![];
    for r in results {
        match r.message {
            None => plain.entry(r.outcome.as_str()).or_default().push(r),
            Some(_) => other.push(r),
        }
    }
    let groups = plain.into_iter().map(|(o, rs)| (Some(o), rs)).chain([(None, other)]);
    let mut out = vec![];
    for (outcome, rs) in groups {
        let width = if outcome.is_some() { 3 } else { 5 };
        for chunk in rs.chunks(PARAMS_PER_INSERT / width) {
            let mut a = Args::positional(b);
            let mut fixed = a.push(job_id.to_string());
            if let Some(o) = outcome {
                fixed = format!("{fixed}, {}, NULL", a.push(o.to_string()));
            }
            let row_sql = format!("({})", vec!["?"; width].join(", "));
            let mut rows_sql = Vec::with_capacity(chunk.len());
            for r in chunk {
                let mut vals = vec![Arg::Int(Some(r.seq)), Arg::Text(r.username.clone()), Arg::Text(r.user_id.clone())];
                if outcome.is_none() {
                    vals.extend([Arg::Text(Some(r.outcome.clone())), Arg::Text(r.message.clone())]);
                }
                if a.anon {
                    vals.into_iter().for_each(|v| a.bind(v));
                    rows_sql.push(row_sql.clone());
                } else {
                    let ps: Vec<String> = vals.into_iter().map(|v| a.push(v)).collect();
                    rows_sql.push(format!("({})", ps.join(", ")));
                }
            }
            let cols = match outcome {
                Some(_) => "seq, username, user_id, job_id, outcome, message",
                None => "seq, username, user_id, outcome, message, job_id",
            };
            let sql = format!(
                "{} INTO job_results ({cols}) SELECT *, {fixed} FROM (VALUES {}) AS v",
                or_ignore(b),
                rows_sql.join(", ")
            );
            out.push((sql, a.finish(), chunk.len() as u64));
        }
    }
    Prepared(out)
}

/// Multi-row INSERTs for users. Only the columns some user sets are bound; the others take
/// their defaults (NULL, false), which is what unset means; a column with one value for every
/// user (state, source and times of an import batch) is bound once per statement. With
/// `skip_conflicts`, a user that conflicts with an existing one is left out instead of failing
/// the statement.
fn users_insert(b: Backend, users: &[User], skip_conflicts: bool) -> Prepared {
    use cairn_domain::fields::PROFILE;
    if users.is_empty() {
        return Prepared::default();
    }
    let mut cols: Vec<&'static str> = Vec::with_capacity(rows::CORE_COLUMNS);
    let mut used = vec![false; rows::CORE_COLUMNS + PROFILE.len()];
    // Each user's profile fields by their place in PROFILE: one lookup per field a user has,
    // not one per column (and none in the profile map itself).
    let mut set: Vec<Vec<(usize, &serde_json::Value)>> = Vec::with_capacity(users.len());
    for u in users {
        let mut i = 0;
        rows::bind_core(u, &mut |col, v| {
            if cols.len() <= i {
                cols.push(col);
            }
            used[i] |= !v.is_default();
            i += 1;
        });
        let mut mine = Vec::with_capacity(u.profile.len());
        for (k, v) in &u.profile {
            if let Some(p) = cairn_domain::fields::profile_index(k) {
                if !v.is_null() && *v != serde_json::Value::Bool(false) {
                    used[rows::CORE_COLUMNS + p] = true;
                }
                mine.push((p, v));
            }
        }
        set.push(mine);
    }
    cols.extend(PROFILE.iter().map(|f| f.column));
    let fields: Vec<usize> = (0..PROFILE.len()).filter(|p| used[rows::CORE_COLUMNS + p]).collect();
    let names: Vec<&str> = cols.iter().zip(&used).filter(|(_, u)| **u).map(|(c, _)| *c).collect();
    let width = names.len();
    // Every user's values of the bound columns, row after row.
    let mut values: Vec<rows::Value> = Vec::with_capacity(users.len() * width);
    let mut slots: Vec<Option<&serde_json::Value>> = vec![None; PROFILE.len()];
    // A JSON value the user before had too (a directory's restrictedFields) is formatted once.
    let mut last: Vec<Option<(&serde_json::Value, rows::Value)>> = vec![None; PROFILE.len()];
    for (u, mine) in users.iter().zip(&set) {
        let mut i = 0;
        rows::bind_core(u, &mut |_, v| {
            if used[i] {
                values.push(v);
            }
            i += 1;
        });
        slots.fill(None);
        for (p, v) in mine {
            slots[*p] = Some(*v);
        }
        values.extend(fields.iter().map(|p| match (slots[*p], &last[*p]) {
            (Some(v), Some((before, text))) if cairn_domain::user::same_json(before, v) => text.clone(),
            (Some(v), _) if PROFILE[*p].kind == cairn_domain::fields::Kind::Json => {
                let text = rows::profile_value_of(&PROFILE[*p], Some(v));
                last[*p] = Some((v, text.clone()));
                text
            }
            (v, _) => rows::profile_value_of(&PROFILE[*p], v),
        }));
    }
    let first = &values[..width];
    // The id (column 0) differs for every user, so no row is empty.
    let constant: Vec<bool> = (0..width).map(|c| c > 0 && values.chunks(width).all(|row| row[c] == first[c])).collect();
    let varying = constant.iter().filter(|c| !**c).count();
    // `INSERT … SELECT *, <constants> FROM (VALUES <rows>)`: the constants' placeholders come
    // first in the text, so every placeholder is an anonymous one in binding order.
    let order: Vec<&str> =
        (0..width).filter(|c| !constant[*c]).chain((0..width).filter(|c| constant[*c])).map(|c| names[c]).collect();
    let row_sql = format!("({})", vec!["?"; varying].join(", "));
    // SQLite: OR IGNORE (every constraint that can fail here is a uniqueness one) lets a
    // multi-row INSERT run without a statement journal; PostgreSQL: ON CONFLICT DO NOTHING.
    let verb = if skip_conflicts && b == Backend::Sqlite { "INSERT OR IGNORE" } else { "INSERT" };
    let tail = if skip_conflicts && b == Backend::Postgres { " ON CONFLICT DO NOTHING" } else { "" };
    let mut out = Vec::new();
    for chunk in values.chunks(width * (PARAMS_PER_INSERT / varying).max(1)) {
        let mut a = Args::positional(b);
        let fixed: String =
            (0..width).filter(|c| constant[*c]).map(|c| format!(", {}", a.push(first[c].clone().into_arg()))).collect();
        let mut rows_sql = Vec::with_capacity(chunk.len() / width);
        for row in chunk.chunks(width) {
            let mut ps = Vec::with_capacity(varying);
            for (v, _) in row.iter().zip(&constant).filter(|(_, k)| !**k) {
                if a.anon {
                    a.bind(v.clone().into_arg());
                } else {
                    ps.push(a.push(v.clone().into_arg()));
                }
            }
            // SQLite placeholders are all `?`: one row text serves every row.
            rows_sql.push(if a.anon { row_sql.clone() } else { format!("({})", ps.join(", ")) });
        }
        let n = rows_sql.len() as u64;
        let sql = format!(
            "{verb} INTO users ({}) SELECT *{fixed} FROM (VALUES {}) AS v{tail}",
            order.join(", "),
            rows_sql.join(", ")
        );
        out.push((sql, a.finish(), n));
    }
    Prepared(out)
}

/// Multi-row INSERTs for events; `changes`, when given, holds each event's changes already
/// as JSON text (imports write them without building a JSON tree first). A column with one
/// value in every event (the actor, action, source of a batch) is bound once per statement.
fn events_insert(b: Backend, events: &[Event], texts: Option<&EventTexts>) -> Prepared {
    use std::borrow::Cow;
    fn t(s: &Option<String>) -> Option<Cow<'_, str>> {
        s.as_deref().map(Cow::Borrowed)
    }
    const COLS: [&str; 14] = [
        "id",
        "time",
        "actor_kind",
        "actor_id",
        "actor_name",
        "action",
        "target_kind",
        "target_id",
        "target_name",
        "source",
        "client_addr",
        "outcome",
        "changes",
        "detail",
    ];
    // Events written together mostly share their time and detail: each run of equal ones is
    // formatted once.
    let (mut times, mut details): (Vec<String>, Vec<std::borrow::Cow<str>>) = (vec![], vec![]);
    let (mut time_of, mut detail_of) = (Vec::with_capacity(events.len()), Vec::with_capacity(events.len()));
    for (i, e) in events.iter().enumerate() {
        if i == 0 || e.time != events[i - 1].time {
            times.push(time_text(e.time));
        }
        match texts {
            Some(t) => {
                if i == 0 || t.details[i] != t.details[i - 1] {
                    details.push(Cow::Borrowed(&t.details[i]));
                }
            }
            None => {
                if i == 0 || e.detail != events[i - 1].detail {
                    details.push(Cow::Owned(e.detail.to_string()));
                }
            }
        }
        time_of.push(times.len() - 1);
        detail_of.push(details.len() - 1);
    }
    let values: Vec<[Option<Cow<str>>; 14]> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            [
                Some(Cow::Borrowed(e.id.as_str())),
                Some(Cow::Borrowed(times[time_of[i]].as_str())),
                Some(Cow::Borrowed(e.actor.kind.as_str())),
                t(&e.actor.id),
                t(&e.actor.name),
                Some(Cow::Borrowed(e.action.as_str())),
                t(&e.target_kind),
                t(&e.target_id),
                t(&e.target_name),
                Some(Cow::Borrowed(e.source.as_str())),
                t(&e.client_addr),
                Some(Cow::Borrowed(e.outcome.as_str())),
                Some(match texts {
                    Some(t) => Cow::Borrowed(t.changes[i].as_str()),
                    None => Cow::Owned(e.changes.to_string()),
                }),
                Some(Cow::Borrowed(details[detail_of[i]].as_ref())),
            ]
        })
        .collect();
    let Some(first) = values.first() else { return Prepared::default() };
    // The id (column 0) varies in every statement, so no row is empty.
    let constant: Vec<bool> = (0..COLS.len()).map(|c| c > 0 && values.iter().all(|v| v[c] == first[c])).collect();
    let varying = constant.iter().filter(|c| !**c).count();
    // `INSERT … SELECT *, <constants> FROM (VALUES <rows>)`: the constants' placeholders come
    // first in the text, so every placeholder is an anonymous one in binding order.
    let order: Vec<usize> =
        (0..COLS.len()).filter(|c| !constant[*c]).chain((0..COLS.len()).filter(|c| constant[*c])).collect();
    let names: Vec<&str> = order.iter().map(|c| COLS[*c]).collect();
    let mut out = Vec::new();
    for chunk in values.chunks((PARAMS_PER_INSERT / varying).max(1)) {
        let mut a = Args::positional(b);
        let mut fixed = Vec::new();
        for c in (0..COLS.len()).filter(|c| constant[*c]) {
            fixed.push(a.push(Arg::Text(first[c].as_ref().map(|v| v.to_string()))));
        }
        let row_sql = format!("({})", vec!["?"; varying].join(", "));
        let mut rows_sql = Vec::with_capacity(chunk.len());
        for v in chunk {
            let mut ps = Vec::with_capacity(varying);
            for c in (0..COLS.len()).filter(|c| !constant[*c]) {
                let value = Arg::Text(v[c].as_ref().map(|v| v.to_string()));
                if a.anon {
                    a.bind(value);
                } else {
                    ps.push(a.push(value));
                }
            }
            // SQLite placeholders are all `?`: one row text serves every row.
            rows_sql.push(if a.anon { row_sql.clone() } else { format!("({})", ps.join(", ")) });
        }
        let consts: String = fixed.iter().map(|p| format!(", {p}")).collect();
        let sql = format!(
            "{} INTO events ({}) SELECT *{consts} FROM (VALUES {}) AS v",
            or_ignore(b),
            names.join(", "),
            rows_sql.join(", ")
        );
        out.push((sql, a.finish(), chunk.len() as u64));
    }
    Prepared(out)
}

impl crate::Store {
    /// The INSERTs of [`Db::insert_new_users`]: users conflicting with existing ones are
    /// skipped.
    pub fn prepare_new_users(&self, users: &[User]) -> Prepared {
        users_insert(self.backend(), users, true)
    }

    /// The INSERTs of [`Db::insert_job_results`].
    pub fn prepare_job_results(&self, job_id: &str, results: &[JobResult]) -> Prepared {
        job_results_insert(self.backend(), job_id, results)
    }

    /// The INSERTs of [`Db::insert_tokens`] and [`Db::insert_messages`]: new links and the
    /// messages carrying them.
    pub fn prepare_mail(&self, tokens: &[NewToken], msgs: &[cairn_domain::OutboxMessage]) -> Prepared {
        let mut p = tokens_insert(self.backend(), tokens);
        p.0.extend(messages_insert(self.backend(), msgs).0);
        p
    }

    /// The INSERTs of events whose changes and details are already JSON text (their
    /// `changes` and `detail` values are not read).
    pub fn prepare_events(&self, events: &[Event], texts: &EventTexts) -> Prepared {
        assert!(events.len() == texts.changes.len() && events.len() == texts.details.len(), "one text per event");
        events_insert(self.backend(), events, Some(texts))
    }
}
