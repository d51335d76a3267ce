//! The graph of grants (§2.2 Association) and the built-in LDAP server: table `associations`
//! holds one row per subject (`from`: a user or user group) and resource (`to`).

use cairn_domain::graph::{GraphKind, Node, ResourceKind, ResourceRef, SubjectKind, SubjectRef};
use cairn_domain::{LdapServer, LdapServerAction};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use crate::rows::{self, get_text, parse_time};
use crate::{time_text, Args, Backend, Db, Result, StoreError};

/// [`Db::granted`]: `$1` the user, `$2` and `$3` the resource's type and id.
const GRANTED: &str = "SELECT CASE WHEN EXISTS (SELECT 1 FROM associations \
        WHERE from_type = 'user' AND from_id = $1 AND to_type = $2 AND to_id = $3) \
    OR EXISTS (SELECT 1 FROM group_members m JOIN associations a \
        ON a.from_type = 'user_group' AND a.from_id = m.group_id AND a.to_type = $2 AND a.to_id = $3 \
        WHERE m.user_id = $1) \
    THEN 1 ELSE 0 END";

/// Any number, the same in every process: the key of the advisory lock of [`Db::lock_setup`].
const SETUP_LOCK: i64 = 0x63_61_69_72_6e; // "cairn"

fn node<K: GraphKind>(r: &AnyRow, type_col: &str, id_col: &str) -> Result<Node<K>> {
    let t = get_text(r, type_col)?;
    let kind = K::parse(&t).ok_or_else(|| StoreError::Corrupt(format!("association {type_col} '{t}'")))?;
    Ok(Node { kind, id: get_text(r, id_col)? })
}

fn ldap_server_from_row(r: &AnyRow) -> Result<LdapServer> {
    let action = |col: &str| -> Result<LdapServerAction> {
        let v = get_text(r, col)?;
        LdapServerAction::parse(&v).ok_or_else(|| StoreError::Corrupt(format!("ldap_servers.{col} '{v}'")))
    };
    Ok(LdapServer {
        id: get_text(r, "id")?,
        name: get_text(r, "name")?,
        user_lockout_action: action("user_lockout_action")?,
        user_password_expiration_action: action("user_password_expiration_action")?,
        created: parse_time(&get_text(r, "created")?)?,
    })
}

/// `col IN ($a, $b, …)` over the kinds' type names.
fn kinds_in<K: GraphKind>(col: &str, kinds: &[K], a: &mut Args) -> String {
    let ps: Vec<String> = kinds.iter().map(|k| a.push(k.as_str().to_string())).collect();
    format!("{col} IN ({})", ps.join(", "))
}

impl Db<'_> {
    /// Serialises one-time setup (the organization, the built-in LDAP server) across processes
    /// starting at once against one PostgreSQL, until this transaction ends. SQLite's
    /// `BEGIN IMMEDIATE` already holds the one write lock.
    pub async fn lock_setup(&mut self) -> Result<()> {
        if self.b == Backend::Postgres {
            // The function returns void, which the Any driver cannot read: count the row.
            sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) l")
                .bind(SETUP_LOCK)
                .fetch_one(&mut *self.c)
                .await?;
        }
        Ok(())
    }

    // ---- associations --------------------------------------------------------------------

    /// The username of a user or the name of a group, `None` when there is none. On
    /// PostgreSQL the row is held against deletion until the transaction ends, as a foreign
    /// key would hold it (`FOR KEY SHARE`: updates of the row go on), so that a deletion
    /// running beside an association being added waits for it and then removes it too,
    /// instead of leaving it behind ([`Db::delete_user`] deletes the row first).
    pub async fn subject_name(&mut self, s: &SubjectRef) -> Result<Option<String>> {
        let hold = match self.b {
            Backend::Postgres => " FOR KEY SHARE",
            Backend::Sqlite => "",
        };
        let sql = match s.kind {
            SubjectKind::User => format!("SELECT username AS name FROM users WHERE id = $1{hold}"),
            SubjectKind::UserGroup => format!("SELECT name FROM usergroups WHERE id = $1{hold}"),
        };
        let row = sqlx::query(&sql).bind(s.id.clone()).fetch_optional(&mut *self.c).await?;
        row.map(|r| get_text(&r, "name")).transpose()
    }

    /// Associates; false when the association already existed.
    pub async fn add_association(&mut self, s: &SubjectRef, r: &ResourceRef, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO associations (from_type, from_id, to_type, to_id, created) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(s.kind.as_str())
        .bind(s.id.clone())
        .bind(r.kind.as_str())
        .bind(r.id.clone())
        .bind(time_text(now))
        .execute(&mut *self.c)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// False when there was no such association.
    pub async fn remove_association(&mut self, s: &SubjectRef, r: &ResourceRef) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM associations WHERE from_type = $1 AND from_id = $2 AND to_type = $3 AND to_id = $4",
        )
        .bind(s.kind.as_str())
        .bind(s.id.clone())
        .bind(r.kind.as_str())
        .bind(r.id.clone())
        .execute(&mut *self.c)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes every association of a subject (when it is deleted).
    pub(crate) async fn remove_subject_associations(&mut self, kind: SubjectKind, id: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM associations WHERE from_type = $1 AND from_id = $2")
            .bind(kind.as_str())
            .bind(id.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes every association of a resource (for the resources that can be deleted).
    pub async fn remove_resource_associations(&mut self, r: &ResourceRef) -> Result<u64> {
        let done = sqlx::query("DELETE FROM associations WHERE to_type = $1 AND to_id = $2")
            .bind(r.kind.as_str())
            .bind(r.id.clone())
            .execute(&mut *self.c)
            .await?;
        Ok(done.rows_affected())
    }

    /// The resources of the given kinds a subject is associated with directly, by type and
    /// id, and how many in all.
    pub async fn resources_of(
        &mut self,
        s: &SubjectRef,
        kinds: &[ResourceKind],
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<ResourceRef>)> {
        if kinds.is_empty() {
            return Ok((0, vec![]));
        }
        let mut a = Args::default();
        let w = format!(
            "from_type = {} AND from_id = {} AND {}",
            a.push(s.kind.as_str().to_string()),
            a.push(s.id.clone()),
            kinds_in("to_type", kinds, &mut a)
        );
        let total = rows::get_i64(
            &sqlx::query_with(&format!("SELECT COUNT(*) FROM associations WHERE {w}"), a.build())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        let (lim, off) = (a.push(limit), a.push(skip));
        let sql = format!(
            "SELECT to_type, to_id FROM associations WHERE {w} ORDER BY to_type, to_id LIMIT {lim} OFFSET {off}"
        );
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        Ok((total, rows.iter().map(|r| node(r, "to_type", "to_id")).collect::<Result<_>>()?))
    }

    /// The users and groups of the given kinds associated with a resource directly, and how
    /// many in all.
    pub async fn subjects_of(
        &mut self,
        r: &ResourceRef,
        kinds: &[SubjectKind],
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<SubjectRef>)> {
        if kinds.is_empty() {
            return Ok((0, vec![]));
        }
        let mut a = Args::default();
        let w = format!(
            "to_type = {} AND to_id = {} AND {}",
            a.push(r.kind.as_str().to_string()),
            a.push(r.id.clone()),
            kinds_in("from_type", kinds, &mut a)
        );
        let total = rows::get_i64(
            &sqlx::query_with(&format!("SELECT COUNT(*) FROM associations WHERE {w}"), a.build())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )?;
        let (lim, off) = (a.push(limit), a.push(skip));
        let sql = format!(
            "SELECT from_type, from_id FROM associations WHERE {w} ORDER BY from_type, from_id LIMIT {lim} OFFSET {off}"
        );
        let rows = sqlx::query_with(&sql, a.build()).fetch_all(&mut *self.c).await?;
        Ok((total, rows.iter().map(|r| node(r, "from_type", "from_id")).collect::<Result<_>>()?))
    }

    /// Whether the user reaches the resource: associated with it directly, or a member of a
    /// group that is. Two index lookups: the key of `associations` for the direct grant, and
    /// the user's memberships (`group_members_user_ix`) each checked against that key.
    pub async fn granted(&mut self, user_id: &str, r: &ResourceRef) -> Result<bool> {
        let row = sqlx::query(GRANTED)
            .bind(user_id.to_string())
            .bind(r.kind.as_str())
            .bind(r.id.clone())
            .fetch_one(&mut *self.c)
            .await?;
        Ok(rows::get_i64(&row, 0)? == 1)
    }

    // ---- the LDAP server -----------------------------------------------------------------

    pub async fn insert_ldap_server(&mut self, s: &LdapServer) -> Result<()> {
        sqlx::query(
            "INSERT INTO ldap_servers (id, name, user_lockout_action, user_password_expiration_action, created) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.id.clone())
        .bind(s.name.clone())
        .bind(s.user_lockout_action.as_str())
        .bind(s.user_password_expiration_action.as_str())
        .bind(time_text(s.created))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// Writes the server's name and actions; false when there is no such server.
    pub async fn update_ldap_server(&mut self, s: &LdapServer) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE ldap_servers SET name = $2, user_lockout_action = $3, user_password_expiration_action = $4 \
             WHERE id = $1",
        )
        .bind(s.id.clone())
        .bind(s.name.clone())
        .bind(s.user_lockout_action.as_str())
        .bind(s.user_password_expiration_action.as_str())
        .execute(&mut *self.c)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The server, locked for the caller's transaction (read-modify-write).
    pub async fn lock_ldap_server(&mut self, id: &str) -> Result<Option<LdapServer>> {
        let sql = format!("SELECT * FROM ldap_servers WHERE id = $1{}", crate::for_update(self.b));
        let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| ldap_server_from_row(&r)).transpose()
    }

    pub async fn get_ldap_server(&mut self, id: &str) -> Result<Option<LdapServer>> {
        let row = sqlx::query("SELECT * FROM ldap_servers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| ldap_server_from_row(&r)).transpose()
    }

    /// Oldest first, and how many in all.
    pub async fn ldap_servers(&mut self, limit: i64, skip: i64) -> Result<(i64, Vec<LdapServer>)> {
        let total = rows::get_i64(&sqlx::query("SELECT COUNT(*) FROM ldap_servers").fetch_one(&mut *self.c).await?, 0)?;
        let rows = sqlx::query("SELECT * FROM ldap_servers ORDER BY created, id LIMIT $1 OFFSET $2")
            .bind(limit)
            .bind(skip)
            .fetch_all(&mut *self.c)
            .await?;
        Ok((total, rows.iter().map(ldap_server_from_row).collect::<Result<_>>()?))
    }
}

#[cfg(test)]
mod tests {
    use crate::{rows, testing, Store};

    /// SQLite's plan for a query, one detail line each.
    async fn plan(store: &Store, sql: &str, binds: &[&str]) -> String {
        let mut c = store.read().await.unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b.to_string());
        }
        let rows = q.fetch_all(&mut *c.c).await.unwrap();
        rows.iter().map(|r| rows::get_text(r, "detail").unwrap()).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn the_grant_and_both_lists_read_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&testing::sqlite_url(dir.path())).await.unwrap();
        store.migrate().await.unwrap();
        for (sql, binds) in [
            (super::GRANTED, &["u", "ldap_server", "l"][..]),
            (
                "SELECT to_type, to_id FROM associations WHERE from_type = 'user' AND from_id = 'u' \
                 AND to_type IN ('ldap_server', 'application') ORDER BY to_type, to_id",
                &[],
            ),
            (
                "SELECT from_type, from_id FROM associations WHERE to_type = 'ldap_server' AND to_id = 'l' \
                 AND from_type IN ('user') ORDER BY from_type, from_id",
                &[],
            ),
        ] {
            let p = plan(&store, sql, binds).await;
            assert!(
                !p.lines().any(|l| l.starts_with("SCAN") && !l.contains("CONSTANT ROW")),
                "a table scan in\n{p}\nfor {sql}"
            );
        }
    }
}
