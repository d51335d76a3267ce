//! Directory connections and the links of mirrored users and groups (migration 0018).

use std::collections::HashMap;

use cairn_domain::dirsync::{Authority, Connection, Mapping, Preset};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::any::AnyRow;

use crate::rows::{get_i64, get_opt_text, get_text, parse_time};
use crate::{time_text, Db, Result, StoreError};

/// Links read per statement by [`Db::user_links`].
const LINKS_PER_READ: usize = 2000;

/// A link as [`Db::user_links`] reads it: upstream id, local id, DN, suspended, digest, and
/// whether the user is untouched since (1), touched (0) or gone (-1).
type LinkRow = (String, String, String, i64, Option<String>, i64);

/// A mirrored user or group: which local record, the upstream DN, whether the sync suspended it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub upstream_id: String,
    pub local_id: String,
    pub dn: String,
    pub suspended: bool,
    /// A digest of what the upstream asked of the user when the sync last applied it.
    pub digest: Option<String>,
    /// The user's `updated` right after that sync.
    pub user_updated: Option<DateTime<Utc>>,
}

fn link_from_row(r: &AnyRow) -> Result<Link> {
    Ok(Link {
        upstream_id: get_text(r, "upstream_id")?,
        local_id: get_text(r, "local_id")?,
        dn: get_text(r, "dn")?,
        suspended: get_i64(r, "suspended")? != 0,
        digest: get_opt_text(r, "digest")?,
        user_updated: get_opt_text(r, "user_updated")?.map(|t| parse_time(&t)).transpose()?,
    })
}

const LINK_UPSERT: &str =
    " ON CONFLICT (connection_id, kind, upstream_id) DO UPDATE SET local_id = excluded.local_id, \
     dn = excluded.dn, suspended = excluded.suspended, digest = excluded.digest, user_updated = excluded.user_updated";

fn settings_json(c: &Connection) -> String {
    json!({
        "url": c.url,
        "startTls": c.starttls,
        "caCert": c.ca_cert,
        "fingerprint": c.fingerprint,
        "bindDn": c.bind_dn,
        "userBase": c.user_base,
        "userFilter": c.user_filter,
        "groupBase": c.group_base,
        "groupFilter": c.group_filter,
        "preset": c.preset.as_str(),
        "mapping": c.mapping_overrides,
        "syncIntervalSeconds": c.sync_interval_seconds,
        "passwordAuthority": c.password_authority.as_str(),
    })
    .to_string()
}

fn from_row(r: &AnyRow) -> Result<Connection> {
    let corrupt = |m: &str| StoreError::Corrupt(format!("directory_connections.settings: {m}"));
    let s: Value = serde_json::from_str(&get_text(r, "settings")?).map_err(|e| corrupt(&e.to_string()))?;
    let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
    let need = |k: &str| text(k).ok_or_else(|| corrupt(k));
    let mapping: Mapping =
        serde_json::from_value(s.get("mapping").cloned().unwrap_or(json!({}))).map_err(|e| corrupt(&e.to_string()))?;
    Ok(Connection {
        id: get_text(r, "id")?,
        name: get_text(r, "name")?,
        url: need("url")?,
        starttls: s.get("startTls").and_then(Value::as_bool).unwrap_or(false),
        ca_cert: text("caCert"),
        fingerprint: text("fingerprint"),
        bind_dn: text("bindDn").unwrap_or_default(),
        sealed_bind_password: get_opt_text(r, "bind_password")?,
        user_base: need("userBase")?,
        user_filter: need("userFilter")?,
        group_base: text("groupBase"),
        group_filter: need("groupFilter")?,
        preset: text("preset").as_deref().and_then(Preset::parse).ok_or_else(|| corrupt("preset"))?,
        mapping_overrides: mapping,
        sync_interval_seconds: s.get("syncIntervalSeconds").and_then(Value::as_i64).unwrap_or(0),
        password_authority: text("passwordAuthority")
            .as_deref()
            .and_then(Authority::parse)
            .ok_or_else(|| corrupt("passwordAuthority"))?,
        created: parse_time(&get_text(r, "created")?)?,
        updated: parse_time(&get_text(r, "updated")?)?,
        last_job: get_opt_text(r, "last_job")?,
        next_sync: get_opt_text(r, "next_sync")?.map(|t| parse_time(&t)).transpose()?,
    })
}

impl Db<'_> {
    pub async fn insert_connection(&mut self, c: &Connection) -> Result<()> {
        sqlx::query(
            "INSERT INTO directory_connections (id, name, settings, bind_password, created, updated, last_job, next_sync) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(c.id.clone())
        .bind(c.name.clone())
        .bind(settings_json(c))
        .bind(c.sealed_bind_password.clone())
        .bind(time_text(c.created))
        .bind(time_text(c.updated))
        .bind(c.last_job.clone())
        .bind(c.next_sync.map(time_text))
        .execute(&mut *self.c)
        .await
        .map_err(crate::map_unique)?;
        Ok(())
    }

    /// Writes everything but the id and creation time.
    pub async fn update_connection(&mut self, c: &Connection) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE directory_connections SET name = $2, settings = $3, bind_password = $4, updated = $5, \
             last_job = $6, next_sync = $7 WHERE id = $1",
        )
        .bind(c.id.clone())
        .bind(c.name.clone())
        .bind(settings_json(c))
        .bind(c.sealed_bind_password.clone())
        .bind(time_text(c.updated))
        .bind(c.last_job.clone())
        .bind(c.next_sync.map(time_text))
        .execute(&mut *self.c)
        .await
        .map_err(crate::map_unique)?;
        Ok(r.rows_affected() == 1)
    }

    /// Its links go with it.
    pub async fn delete_connection(&mut self, id: &str) -> Result<bool> {
        sqlx::query("DELETE FROM directory_links WHERE connection_id = $1")
            .bind(id.to_string())
            .execute(&mut *self.c)
            .await?;
        let r = sqlx::query("DELETE FROM directory_connections WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The connection; on PostgreSQL its row held until the transaction ends when `hold`.
    pub async fn get_connection(&mut self, id: &str, hold: bool) -> Result<Option<Connection>> {
        let lock = if hold { crate::for_update(self.b) } else { "" };
        let sql = format!("SELECT * FROM directory_connections WHERE id = $1{lock}");
        let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| from_row(&r)).transpose()
    }

    /// Oldest first, and how many in all.
    pub async fn connections(&mut self, limit: i64, skip: i64) -> Result<(i64, Vec<Connection>)> {
        let total =
            get_i64(&sqlx::query("SELECT COUNT(*) FROM directory_connections").fetch_one(&mut *self.c).await?, 0)?;
        let rows = sqlx::query("SELECT * FROM directory_connections ORDER BY created, id LIMIT $1 OFFSET $2")
            .bind(limit)
            .bind(skip)
            .fetch_all(&mut *self.c)
            .await?;
        Ok((total, rows.iter().map(from_row).collect::<Result<_>>()?))
    }

    /// Claims a periodic sync that is due: moves `next_sync` from `due` to `next` only if no
    /// other process did first. True when this caller won.
    pub async fn claim_connection_sync(&mut self, id: &str, due: DateTime<Utc>, next: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query("UPDATE directory_connections SET next_sync = $3 WHERE id = $1 AND next_sync = $2")
            .bind(id.to_string())
            .bind(time_text(due))
            .bind(time_text(next))
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn set_connection_job(&mut self, id: &str, job: &str) -> Result<()> {
        sqlx::query("UPDATE directory_connections SET last_job = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(job.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    /// Every link of one kind (`user`, `group`) of a connection.
    pub async fn links(&mut self, connection: &str, kind: &str) -> Result<Vec<Link>> {
        let rows = sqlx::query("SELECT * FROM directory_links WHERE connection_id = $1 AND kind = $2")
            .bind(connection.to_string())
            .bind(kind.to_string())
            .fetch_all(&mut *self.c)
            .await?;
        rows.iter().map(link_from_row).collect()
    }

    /// Every user link of a connection, and whether its user is untouched since the sync last
    /// wrote it (its `updated` is the one the link holds; `None`: the user is gone), in one
    /// read: a re-sync tells unchanged users from these alone. The database compares the
    /// stamps, so a link comes back with neither (`user_updated` is `None`): a hundred thousand
    /// links cost half as much to read without two timestamps each to copy and parse. Links are
    /// read a few thousand at a time, in upstream id order (a hundred thousand raw rows at once
    /// would double the memory a re-sync needs), keyed by upstream id in a map sized once from
    /// a count (growing it, or collecting a list first, holds two copies at the peak).
    pub async fn user_links(&mut self, connection: &str) -> Result<HashMap<String, (Link, Option<bool>)>> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM directory_links WHERE connection_id = $1 AND kind = 'user'",
        )
        .bind(connection.to_string())
        .fetch_one(&mut *self.c)
        .await?;
        let mut out = HashMap::with_capacity(usize::try_from(n).unwrap_or(0));
        // A chunk of links comes back as one JSON array in one row: a row per link cost a
        // copy of each of its six values in SQLite, another into sqlx's `Any` row and a third
        // into the link (a quarter of a 100,000-user re-sync's CPU).
        let agg = match self.b {
            crate::Backend::Sqlite => "json_group_array(json_array(upstream_id, local_id, dn, suspended, digest, t))",
            crate::Backend::Postgres => {
                "CAST(json_agg(json_build_array(upstream_id, local_id, dn, suspended, digest, t)) AS TEXT)"
            }
        };
        let mut after: Option<String> = None;
        loop {
            let from = if after.is_some() { " AND l.upstream_id > $2" } else { "" };
            let sql = format!(
                "SELECT {agg}, max(upstream_id) FROM (SELECT l.upstream_id, l.local_id, l.dn, l.suspended, l.digest, \
                 CAST(CASE WHEN u.id IS NULL THEN -1 WHEN u.updated = l.user_updated THEN 1 ELSE 0 END AS BIGINT) AS t \
                 FROM directory_links l LEFT JOIN users u ON u.id = l.local_id \
                 WHERE l.connection_id = $1 AND l.kind = 'user'{from} ORDER BY l.upstream_id LIMIT {LINKS_PER_READ}) s"
            );
            let mut q = sqlx::query(&sql).bind(connection.to_string());
            if let Some(a) = after.take() {
                q = q.bind(a);
            }
            let r = q.fetch_one(&mut *self.c).await?;
            let Some(last) = get_opt_text(&r, 1)? else { break };
            let chunk: Vec<LinkRow> = serde_json::from_str(&get_opt_text(&r, 0)?.unwrap_or_default())
                .map_err(|e| StoreError::Corrupt(format!("directory links: {e}")))?;
            let full = chunk.len() >= LINKS_PER_READ;
            for (upstream_id, local_id, dn, suspended, digest, t) in chunk {
                let untouched = (t >= 0).then_some(t == 1);
                let link = Link { upstream_id, local_id, dn, suspended: suspended != 0, digest, user_updated: None };
                out.insert(link.upstream_id.clone(), (link, untouched));
            }
            if !full {
                break;
            }
            after = Some(last);
        }
        Ok(out)
    }

    /// The link of a local user or group to a connection.
    pub async fn link_of(&mut self, connection: &str, local_id: &str) -> Result<Option<Link>> {
        let row = sqlx::query("SELECT * FROM directory_links WHERE connection_id = $1 AND local_id = $2")
            .bind(connection.to_string())
            .bind(local_id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| link_from_row(&r)).transpose()
    }

    /// Inserts or replaces a link.
    pub async fn put_link(&mut self, connection: &str, kind: &str, l: &Link) -> Result<()> {
        self.put_links(connection, kind, std::slice::from_ref(l)).await
    }

    /// Inserts or replaces many links, a few hundred per statement.
    pub async fn put_links(&mut self, connection: &str, kind: &str, links: &[Link]) -> Result<()> {
        for (sql, args, _) in links_insert(self.b, connection, kind, links).0 {
            sqlx::query_with(&sql, args).execute(&mut *self.c).await?;
        }
        Ok(())
    }

    pub async fn delete_link(&mut self, connection: &str, kind: &str, upstream_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM directory_links WHERE connection_id = $1 AND kind = $2 AND upstream_id = $3")
            .bind(connection.to_string())
            .bind(kind.to_string())
            .bind(upstream_id.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }
}

/// The statements of [`Db::put_links`] (anonymous placeholders on SQLite: binding thousands
/// of numbered ones looks each name up, quadratic).
fn links_insert(b: crate::Backend, connection: &str, kind: &str, links: &[Link]) -> crate::Prepared {
    let mut out = vec![];
    for chunk in links.chunks(500) {
        let mut a = crate::Args::positional(b);
        let mut rows = Vec::with_capacity(chunk.len());
        for l in chunk {
            let ps = [
                a.push(connection.to_string()),
                a.push(kind.to_string()),
                a.push(l.upstream_id.clone()),
                a.push(l.local_id.clone()),
                a.push(l.dn.clone()),
                a.push(i64::from(l.suspended)),
                a.push(crate::Arg::Text(l.digest.clone())),
                a.push(crate::Arg::Text(l.user_updated.map(time_text))),
            ];
            rows.push(format!("({})", ps.join(", ")));
        }
        let sql = format!(
            "INSERT INTO directory_links (connection_id, kind, upstream_id, local_id, dn, suspended, digest, \
             user_updated) VALUES {}{LINK_UPSERT}",
            rows.join(", ")
        );
        out.push((sql, a.finish(), chunk.len() as u64));
    }
    crate::Prepared(out)
}

impl crate::Store {
    /// The statements of [`Db::put_links`], bound ahead (run with `execute_prepared`).
    pub fn prepare_links(&self, connection: &str, kind: &str, links: &[Link]) -> crate::Prepared {
        links_insert(self.backend(), connection, kind, links)
    }
}
