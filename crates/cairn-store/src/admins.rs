//! Queries for the admin portal (§7): administrators' sessions, TOTP secrets and remembered
//! columns, and the Users page's group filter.

use cairn_domain::lockout::Lockout;
use cairn_domain::query::ListQuery;
use cairn_domain::AdminSession;
use cairn_domain::{Admin, User};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use crate::credentials::SessionTable;
use crate::rows::{self, get_bool, get_opt_text};
use crate::{order_by, time_text, Args, Backend, Db, Result};

/// What the portal keeps about an administrator beside the `Admin` record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminExtras {
    /// Sealed TOTP secret, when enrolled.
    pub totp_secret: Option<String>,
    pub mfa_required: bool,
    /// JSON list of the Users page's columns, in order.
    pub user_columns: Option<String>,
    /// Consecutive failed sign-ins and the lock they led to (the users' rule, §3.5).
    pub lockout: Lockout,
}

pub(crate) fn extras_from_row(r: &AnyRow) -> Result<AdminExtras> {
    Ok(AdminExtras {
        totp_secret: get_opt_text(r, "totp_secret")?,
        mfa_required: get_bool(r, "mfa_required")?,
        user_columns: get_opt_text(r, "user_columns")?,
        lockout: Lockout {
            failures: rows::get_i64(r, "badloginattempts")?,
            locked: get_bool(r, "account_locked")?,
            locked_at: get_opt_text(r, "account_locked_date")?.map(|t| rows::parse_time(&t)).transpose()?,
        },
    })
}

pub(crate) const ADMIN_SESSIONS: SessionTable = SessionTable { table: "admin_sessions", owner: "admin_id" };

/// What reading one member costs (its row found by id, its sort key computed, sorted), in
/// index entries walked with a membership probe each: 3.7 µs against 0.6 µs, measured on a
/// 100,000-user SQLite directory (see `list_users_in_group`).
const MEMBER_READ_COST: i64 = 6;

impl Db<'_> {
    pub async fn get_admin(&mut self, id: &str) -> Result<Option<Admin>> {
        let row =
            sqlx::query("SELECT * FROM admins WHERE id = $1").bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| rows::admin_from_row(&r)).transpose()
    }

    pub async fn admin_extras(&mut self, id: &str) -> Result<AdminExtras> {
        let row =
            sqlx::query("SELECT * FROM admins WHERE id = $1").bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        match row {
            None => Ok(AdminExtras::default()),
            Some(r) => extras_from_row(&r),
        }
    }

    pub async fn set_admin_mfa_required(&mut self, id: &str, required: bool) -> Result<bool> {
        let r = sqlx::query("UPDATE admins SET mfa_required = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(required)
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_admin_totp(&mut self, id: &str, sealed: Option<&str>, now: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query("UPDATE admins SET totp_secret = $2, updated = $3 WHERE id = $1")
            .bind(id.to_string())
            .bind(sealed.map(str::to_string))
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_admin_columns(&mut self, id: &str, columns_json: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE admins SET user_columns = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(columns_json.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn put_admin_session(&mut self, s: &AdminSession) -> Result<()> {
        self.put_session_row(ADMIN_SESSIONS, &s.id, &s.admin_id, &s.kind, s.created, s.expires, &s.data).await
    }

    /// The session with this id, unless it has expired.
    pub async fn get_admin_session(&mut self, id: &str, now: DateTime<Utc>) -> Result<Option<AdminSession>> {
        let row = self.get_session_row(ADMIN_SESSIONS, id, now).await?;
        Ok(row.map(|(id, admin_id, kind, created, expires, data)| AdminSession {
            id,
            admin_id,
            kind,
            created,
            expires,
            data,
        }))
    }

    pub async fn delete_admin_session(&mut self, id: &str) -> Result<()> {
        self.delete_session_row(ADMIN_SESSIONS, id).await
    }

    /// Removes expired sessions; the number removed.
    pub async fn purge_admin_sessions(&mut self, now: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query("DELETE FROM admin_sessions WHERE expires <= $1")
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected())
    }

    /// The conditions of a list query restricted to the members of one group (the members
    /// first: a semi-join PostgreSQL's planner may turn either way).
    fn group_where_clause(&self, q: &ListQuery, group_id: &str, a: &mut Args) -> String {
        let base = self.user_where_clause(q, a);
        let g = a.push(group_id.to_string());
        let member = format!("id IN (SELECT user_id FROM group_members WHERE group_id = {g})");
        if base.is_empty() {
            format!(" WHERE {member}")
        } else {
            format!("{base} AND {member}")
        }
    }

    /// The rows of a group's members a list query matches. When it asks nothing else of
    /// them they are read from the membership key alone (every member is a user: the foreign
    /// key cascades) rather than joined with the users: that join cost 38 ms for 5,000 members
    /// on PostgreSQL on every group page (issue 19).
    fn group_member_rows(&self, q: &ListQuery, group_id: &str, a: &mut Args) -> String {
        if self.asks_only_membership(q) {
            let g = a.push(group_id.to_string());
            return format!("SELECT 1 FROM group_members WHERE group_id = {g}");
        }
        format!("SELECT 1 FROM users{}", self.group_where_clause(q, group_id, a))
    }

    /// How many members of a group a list query matches.
    pub async fn count_users_in_group(&mut self, q: &ListQuery, group_id: &str) -> Result<i64> {
        let mut a = Args::default();
        let sql = format!("SELECT COUNT(*) FROM ({}) matched", self.group_member_rows(q, group_id, &mut a));
        rows::get_i64(&sqlx::query_with(&sql, a.build()).fetch_one(&mut *self.c).await?, 0)
    }

    /// As [`Self::count_users_in_group`], counting no further than `cap`: `None` when more.
    pub async fn count_users_in_group_up_to(&mut self, q: &ListQuery, group_id: &str, cap: i64) -> Result<Option<i64>> {
        let mut a = Args::default();
        let rows_sql = self.group_member_rows(q, group_id, &mut a);
        let lim = a.push(cap + 1);
        let sql = format!("SELECT COUNT(*) FROM ({rows_sql} LIMIT {lim}) capped");
        let n = rows::get_i64(&sqlx::query_with(&sql, a.build()).fetch_one(&mut *self.c).await?, 0)?;
        Ok((n <= cap).then_some(n))
    }

    /// As `list_users`, restricted to the members of one group; `total` when the caller
    /// already knows the count (the directory keeps large ones, see its `counts`).
    pub async fn list_users_in_group(
        &mut self,
        q: &ListQuery,
        group_id: &str,
        total: Option<i64>,
    ) -> Result<(i64, Vec<User>)> {
        let total = match total {
            Some(n) => n,
            None => self.count_users_in_group(q, group_id).await?,
        };
        let mut a = Args::default();
        let sql = if self.b != Backend::Sqlite {
            let where_sql = self.group_where_clause(q, group_id, &mut a);
            let (lim, off) = (a.push(q.limit), a.push(q.skip));
            format!("SELECT * FROM users{where_sql} ORDER BY {} LIMIT {lim} OFFSET {off}", order_by(q))
        } else if q.sort.is_empty() && self.asks_only_membership(q) {
            // The portal's default group page (sorted by id, nothing else asked): the
            // membership key is already in that order, so a page is its next `limit` entries
            // and one user lookup each (`CROSS JOIN` keeps SQLite from driving the join from
            // users). The walk below probed ~20 users per member shown at 5 % membership: the
            // only group page whose time grew with the directory (issue 19).
            let g = a.push(group_id.to_string());
            let (lim, off) = (a.push(q.limit), a.push(q.skip));
            format!(
                "SELECT users.* FROM group_members m CROSS JOIN users ON users.id = m.user_id \
                 WHERE m.group_id = {g} ORDER BY m.user_id LIMIT {lim} OFFSET {off}"
            )
        } else {
            // Otherwise a page either walks the users in sort order keeping the members (a
            // probe of the membership key each; about (skip + limit) × users / members
            // entries), or reads every member; whichever reads less. At 1,000,000 users a
            // group of 50,000 sorted by last name took 0.5 s+ per page read whole; at 100,000 a
            // group of 5,000 took 19 ms read whole and 3.5 ms walked (BENCHMARKS.md, issue 19).
            // The largest rowid stands for the users: as many, or more after deletions (which
            // only makes the walk look dearer); read from the end of the table, not counted.
            let users = rows::get_i64(
                &sqlx::query("SELECT COALESCE(MAX(rowid), 0) FROM users").fetch_one(&mut *self.c).await?,
                0,
            )?;
            let walked = q.skip.saturating_add(q.limit).saturating_mul(users);
            let order = order_by(q);
            if walked < MEMBER_READ_COST.saturating_mul(total).saturating_mul(total) {
                let base = self.user_where_clause(q, &mut a);
                let g = a.push(group_id.to_string());
                let member =
                    format!("EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = {g} AND m.user_id = users.id)");
                let glue = if base.is_empty() { " WHERE" } else { " AND" };
                let (lim, off) = (a.push(q.limit), a.push(q.skip));
                format!("SELECT * FROM users{base}{glue} {member} ORDER BY {order} LIMIT {lim} OFFSET {off}")
            } else {
                // Every member is read: sort only their keys and ids, then read this page's
                // rows (`CROSS JOIN`: the page's ids drive the lookups).
                let where_sql = self.group_where_clause(q, group_id, &mut a);
                let (lim, off) = (a.push(q.limit), a.push(q.skip));
                format!(
                    "SELECT u.* FROM (SELECT id FROM users{where_sql} ORDER BY {order} \
                     LIMIT {lim} OFFSET {off}) page CROSS JOIN users u USING (id) ORDER BY {order}"
                )
            }
        };
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        let users = rows.iter().map(rows::user_from_row).collect::<Result<Vec<_>>>()?;
        Ok((total, users))
    }

    /// Whether a list query asks nothing of a group's members but their membership.
    fn asks_only_membership(&self, q: &ListQuery) -> bool {
        self.user_where_clause(q, &mut Args::default()).is_empty()
    }
}
