//! The change log (migration 0012) and the reads a read model (the LDAP tree) is built from:
//! every non-staged user, every group with its members, and the subjects associated with a
//! resource, all at once or by id.
//!
//! A reader keeps a [`ChangeCursor`] and asks [`Db::changes_after`] what changed since. On
//! SQLite one writer runs at a time, so `seq` order is commit order and the cursor is the last
//! `seq`. On PostgreSQL transactions commit in another order than they took their `seq`: the
//! cursor is the oldest transaction still running at the last read (`pg_snapshot_xmin`), and
//! every row written by it or a later transaction is read again; rows already seen are
//! remembered until their transaction is older than the horizon, so each is returned once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use cairn_domain::fields::Field;
use cairn_domain::graph::{GraphKind, ResourceRef, SubjectKind};
use cairn_domain::{Group, User};
use chrono::{DateTime, Utc};

use crate::rows::{self, get_i64, get_opt_text, get_text};
use crate::{time_text, Args, Backend, Db, Result, Store, StoreError};

/// What a change log row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A user was created, changed (in what a read model shows) or deleted.
    User,
    /// A group was created, changed or deleted.
    Group,
    /// A group's members changed (the id is the group's).
    Members,
    /// An association with the resource whose id this is was added or removed.
    Grant,
    /// The LDAP server's settings changed.
    LdapServer,
}

impl ChangeKind {
    fn parse(s: &str) -> Option<ChangeKind> {
        Some(match s {
            "user" => ChangeKind::User,
            "group" => ChangeKind::Group,
            "members" => ChangeKind::Members,
            "grant" => ChangeKind::Grant,
            "ldap_server" => ChangeKind::LdapServer,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub kind: ChangeKind,
    pub id: String,
}

/// Where a reader of the change log stands (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeCursor {
    /// SQLite: the last `seq` read.
    Seq(i64),
    /// PostgreSQL: the horizon of the last read, and the rows read since then by `seq`, with
    /// the transaction that wrote each.
    Xid { horizon: i64, seen: HashMap<i64, i64> },
}

impl Store {
    /// Transactions this process has committed so far (any table). A read model that last
    /// read the change log when this was `n` need not read it again while it is still `n`,
    /// except for what other processes write (see `Db::changes_after`).
    pub fn local_commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// Changes other processes announced so far (see [`Store::watch_changes`]).
    pub fn external_changes(&self) -> u64 {
        self.external.load(Ordering::Acquire)
    }

    /// On PostgreSQL, listens on `cairn_changes` (the change log's triggers notify it when
    /// their transaction commits) and counts each notification in `external_changes`, until
    /// the process ends. A lost connection is made again and counted as a change, since
    /// notifications may have been missed meanwhile. Nothing to do on SQLite.
    pub fn watch_changes(&self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let (url, external) = (self.url.clone(), self.external.clone());
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_millis(200);
            loop {
                match sqlx::postgres::PgListener::connect(&url).await {
                    Ok(mut l) => match l.listen("cairn_changes").await {
                        Ok(()) => {
                            wait = std::time::Duration::from_millis(200);
                            external.fetch_add(1, Ordering::Release);
                            while let Ok(Some(_)) = l.try_recv().await {
                                external.fetch_add(1, Ordering::Release);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot listen for directory changes"),
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot connect to listen for directory changes"),
                }
                external.fetch_add(1, Ordering::Release);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
        });
    }
}

/// Most change log rows returned by one read; a reader given this many loads everything again.
pub const MAX_CHANGES: i64 = 20_000;

impl Db<'_> {
    /// The position of a reader that has read everything committed so far; taken before a
    /// full load, so that what commits during the load is read again afterwards.
    pub async fn change_cursor(&mut self) -> Result<ChangeCursor> {
        match self.b {
            Backend::Sqlite => {
                // AUTOINCREMENT's counter, which pruning leaves alone.
                let r = sqlx::query("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'change_log'), 0)")
                    .fetch_one(&mut *self.c)
                    .await?;
                Ok(ChangeCursor::Seq(get_i64(&r, 0)?))
            }
            Backend::Postgres => {
                let r =
                    sqlx::query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetch_one(&mut *self.c).await?;
                Ok(ChangeCursor::Xid { horizon: xid(&get_text(&r, 0)?)?, seen: HashMap::new() })
            }
        }
    }

    /// What changed after `cursor`, each change once, and the cursor to read on from; `None`
    /// when more than [`MAX_CHANGES`] rows are waiting or the cursor is older than the log
    /// (pruned): the reader should load everything again.
    pub async fn changes_after(&mut self, cursor: &ChangeCursor) -> Result<Option<(Vec<Change>, ChangeCursor)>> {
        let mut out = Vec::new();
        let mut seen_ids = HashSet::new();
        let mut push = |kind: &str, id: String| -> Result<()> {
            let kind =
                ChangeKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("change_log kind '{kind}'")))?;
            let c = Change { kind, id };
            if seen_ids.insert(c.clone()) {
                out.push(c);
            }
            Ok(())
        };
        match cursor {
            ChangeCursor::Seq(last) => {
                let rows = sqlx::query(
                    "SELECT seq, kind, id, (SELECT MIN(seq) FROM change_log) AS first FROM change_log \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(*last)
                .bind(MAX_CHANGES + 1)
                .fetch_all(&mut *self.c)
                .await?;
                if rows.len() as i64 > MAX_CHANGES {
                    return Ok(None);
                }
                // Rows pruned past the reader: the gap cannot be read (SQLite leaves no gaps).
                if let Some(r) = rows.first() {
                    if get_i64(r, "first")? > last + 1 {
                        return Ok(None);
                    }
                }
                let mut next = *last;
                for r in &rows {
                    next = get_i64(r, "seq")?;
                    push(&get_text(r, "kind")?, get_text(r, "id")?)?;
                }
                Ok(Some((out, ChangeCursor::Seq(next))))
            }
            ChangeCursor::Xid { horizon, seen } => {
                // The horizon and the rows from one snapshot: every transaction older than the
                // new horizon had ended when these rows were read.
                let rows = sqlx::query(
                    "SELECT h.h::text AS horizon, c.seq::text AS seq, c.kind, c.id, c.xid::text AS xid \
                     FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS h) h \
                     LEFT JOIN change_log c ON c.xid >= $1::text::xid8 ORDER BY c.seq LIMIT $2",
                )
                .bind(horizon.to_string())
                .bind(MAX_CHANGES + 1)
                .fetch_all(&mut *self.c)
                .await?;
                if rows.len() as i64 > MAX_CHANGES {
                    return Ok(None);
                }
                let new_horizon = match rows.first() {
                    Some(r) => xid(&get_text(r, "horizon")?)?,
                    None => *horizon,
                };
                let mut next_seen = HashMap::new();
                for r in &rows {
                    let Some(seq) = get_opt_text(r, "seq")?.map(|s| s.parse::<i64>()) else { continue };
                    let seq = seq.map_err(|e| StoreError::Corrupt(format!("change_log seq: {e}")))?;
                    let x = xid(&get_text(r, "xid")?)?;
                    if x >= new_horizon {
                        next_seen.insert(seq, x);
                    }
                    if !seen.contains_key(&seq) {
                        push(&get_text(r, "kind")?, get_text(r, "id")?)?;
                    }
                }
                Ok(Some((out, ChangeCursor::Xid { horizon: new_horizon, seen: next_seen })))
            }
        }
    }

    /// Deletes change log rows older than `before`.
    pub async fn prune_changes(&mut self, before: DateTime<Utc>) -> Result<u64> {
        let sql = match self.b {
            Backend::Sqlite => "DELETE FROM change_log WHERE at < $1",
            Backend::Postgres => "DELETE FROM change_log WHERE at < $1::text::timestamptz",
        };
        Ok(sqlx::query(sql).bind(time_text(before)).execute(&mut *self.c).await?.rows_affected())
    }

    /// The users of these ids that exist (in any state), as a read model shows them: the core
    /// fields without the password hash and the TOTP secret, and of the profile only `profile`.
    /// Decoding every column of every user was most of the LDAP tree's load at a million users.
    pub async fn read_user_views(&mut self, ids: &[String], profile: &[&'static Field]) -> Result<Vec<User>> {
        let cols: Vec<&str> = rows::PUBLIC_CORE.iter().copied().chain(profile.iter().map(|f| f.column)).collect();
        let cols = cols.join(", ");
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut a = Args::default();
            let ps: Vec<String> = chunk.iter().map(|id| a.push(id.clone())).collect();
            let sql = format!("SELECT {cols} FROM users WHERE id IN ({})", ps.join(", "));
            for r in sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await? {
                out.push(rows::user_from_row_with(&r, profile.iter().copied(), false)?);
            }
        }
        Ok(out)
    }

    /// Groups (all, or those of these ids that exist) with their members' ids.
    pub async fn groups_with_members(&mut self, ids: Option<&[String]>) -> Result<Vec<(Group, Vec<String>)>> {
        let mut groups = Vec::new();
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        let chunks: Vec<Option<&[String]>> = match ids {
            None => vec![None],
            Some(ids) => ids.chunks(500).map(Some).collect(),
        };
        for chunk in chunks {
            let mut a = Args::default();
            let w = match chunk {
                None => String::new(),
                Some(c) => {
                    let ps: Vec<String> = c.iter().map(|id| a.push(id.clone())).collect();
                    format!(" WHERE id IN ({})", ps.join(", "))
                }
            };
            let rows = sqlx::query_with(&format!("SELECT * FROM usergroups{w}"), a.clone().build())
                .fetch_all(&mut *self.c)
                .await?;
            for r in &rows {
                groups.push(rows::group_from_row(r)?);
            }
            let w = w.replace("WHERE id", "WHERE group_id");
            let rows = sqlx::query_with(&format!("SELECT group_id, user_id FROM group_members{w}"), a.build())
                .fetch_all(&mut *self.c)
                .await?;
            for r in &rows {
                members.entry(get_text(r, "group_id")?).or_default().push(get_text(r, "user_id")?);
            }
        }
        Ok(groups
            .into_iter()
            .map(|g| {
                let m = members.remove(&g.id).unwrap_or_default();
                (g, m)
            })
            .collect())
    }

    /// Every user and group associated with the resource directly.
    pub async fn all_subjects_of(&mut self, r: &ResourceRef) -> Result<Vec<(SubjectKind, String)>> {
        let rows = sqlx::query("SELECT from_type, from_id FROM associations WHERE to_type = $1 AND to_id = $2")
            .bind(r.kind.as_str())
            .bind(r.id.clone())
            .fetch_all(&mut *self.c)
            .await?;
        rows.iter()
            .filter_map(|r| {
                let t = match get_text(r, "from_type") {
                    Ok(t) => t,
                    Err(e) => return Some(Err(e)),
                };
                let kind = match t.as_str() {
                    "user" => SubjectKind::User,
                    "user_group" => SubjectKind::UserGroup,
                    _ => return None,
                };
                Some(get_text(r, "from_id").map(|id| (kind, id)))
            })
            .collect()
    }
}

fn xid(s: &str) -> Result<i64> {
    s.parse::<i64>().map_err(|e| StoreError::Corrupt(format!("transaction id '{s}': {e}")))
}
