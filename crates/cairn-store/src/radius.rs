//! RADIUS servers (migration 0014): JumpCloud's `radiusserver`, the secret stored sealed.

use cairn_domain::radius::{RadiusAction, RadiusMfa, RadiusServer, Source};
use sqlx::any::AnyRow;

use crate::rows::{self, get_i64, get_text, parse_time};
use crate::{time_text, Backend, Db, Result, StoreError};

fn from_row(r: &AnyRow) -> Result<RadiusServer> {
    let corrupt = |col: &str, v: &str| StoreError::Corrupt(format!("radius_servers.{col} '{v}'"));
    let action = |col: &str| -> Result<RadiusAction> {
        let v = get_text(r, col)?;
        RadiusAction::parse(&v).ok_or_else(|| corrupt(col, &v))
    };
    let source = get_text(r, "network_source_ip")?;
    let mfa = get_text(r, "mfa")?;
    Ok(RadiusServer {
        id: get_text(r, "id")?,
        name: get_text(r, "name")?,
        source: Source::parse(&source).ok_or_else(|| corrupt("network_source_ip", &source))?,
        sealed_secret: get_text(r, "shared_secret")?,
        mfa: RadiusMfa::parse(&mfa).ok_or_else(|| corrupt("mfa", &mfa))?,
        user_lockout_action: action("user_lockout_action")?,
        user_password_expiration_action: action("user_password_expiration_action")?,
        user_password_enabled: get_i64(r, "user_password_enabled")? != 0,
        created: parse_time(&get_text(r, "created")?)?,
    })
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds `$1`…`$8`: the id and every column a write sets.
fn bind<'q>(q: Query<'q>, s: &RadiusServer) -> Query<'q> {
    q.bind(s.id.clone())
        .bind(s.name.clone())
        .bind(s.source.to_string())
        .bind(s.sealed_secret.clone())
        .bind(s.mfa.as_str())
        .bind(s.user_lockout_action.as_str())
        .bind(s.user_password_expiration_action.as_str())
        .bind(i64::from(s.user_password_enabled))
}

impl Db<'_> {
    /// Holds every other writer of RADIUS servers off until this transaction ends, so that an
    /// overlap check and the write it allows are one step (SQLite's one writer already is).
    /// Readers go on.
    pub async fn lock_radius_servers(&mut self) -> Result<()> {
        if self.b == Backend::Postgres {
            sqlx::query("LOCK TABLE radius_servers IN SHARE ROW EXCLUSIVE MODE").execute(&mut *self.c).await?;
        }
        Ok(())
    }

    pub async fn insert_radius_server(&mut self, s: &RadiusServer) -> Result<()> {
        let sql = "INSERT INTO radius_servers (id, name, network_source_ip, shared_secret, mfa, user_lockout_action, \
                   user_password_expiration_action, user_password_enabled, created) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        bind(sqlx::query(sql), s).bind(time_text(s.created)).execute(&mut *self.c).await?;
        Ok(())
    }

    /// Writes everything but the id and creation time; false when there is no such server.
    pub async fn update_radius_server(&mut self, s: &RadiusServer) -> Result<bool> {
        let sql = "UPDATE radius_servers SET name = $2, network_source_ip = $3, shared_secret = $4, mfa = $5, \
                   user_lockout_action = $6, user_password_expiration_action = $7, user_password_enabled = $8 \
                   WHERE id = $1";
        let r = bind(sqlx::query(sql), s).execute(&mut *self.c).await?;
        Ok(r.rows_affected() == 1)
    }

    /// False when there was no such server. Its associations go with it (the caller's
    /// transaction).
    pub async fn delete_radius_server(&mut self, id: &str) -> Result<bool> {
        let r =
            sqlx::query("DELETE FROM radius_servers WHERE id = $1").bind(id.to_string()).execute(&mut *self.c).await?;
        Ok(r.rows_affected() == 1)
    }

    /// The server; on PostgreSQL held against deletion and change until the transaction ends
    /// when `hold` (an association being added, a read-modify-write).
    pub async fn get_radius_server(&mut self, id: &str, hold: bool) -> Result<Option<RadiusServer>> {
        let lock = if hold { crate::for_update(self.b) } else { "" };
        let sql = format!("SELECT * FROM radius_servers WHERE id = $1{lock}");
        let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| from_row(&r)).transpose()
    }

    /// Oldest first, and how many in all.
    pub async fn radius_servers(&mut self, limit: i64, skip: i64) -> Result<(i64, Vec<RadiusServer>)> {
        let total =
            rows::get_i64(&sqlx::query("SELECT COUNT(*) FROM radius_servers").fetch_one(&mut *self.c).await?, 0)?;
        let rows = sqlx::query("SELECT * FROM radius_servers ORDER BY created, id LIMIT $1 OFFSET $2")
            .bind(limit)
            .bind(skip)
            .fetch_all(&mut *self.c)
            .await?;
        Ok((total, rows.iter().map(from_row).collect::<Result<_>>()?))
    }
}
