//! Applications (OIDC relying parties), the provider's signing keys, and its authorization
//! codes and tokens (by the SHA-256 of their values).

use cairn_domain::application::{AppSettings, Application};
use cairn_domain::graph::{ResourceKind, ResourceRef};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use crate::access::for_update;
use crate::rows::{self, get_opt_text, get_text, parse_time};
use crate::{map_unique, time_text, Db, Result, StoreError};

fn app_from_row(r: &AnyRow) -> Result<Application> {
    let settings: AppSettings = serde_json::from_str(&get_text(r, "settings")?)
        .map_err(|e| StoreError::Corrupt(format!("applications.settings: {e}")))?;
    Ok(Application {
        id: get_text(r, "id")?,
        name: get_text(r, "name")?,
        client_id: get_text(r, "client_id")?,
        secret_hash: get_opt_text(r, "secret_hash")?,
        created: parse_time(&get_text(r, "created")?)?,
        settings,
    })
}

/// A signing key as stored.
#[derive(Debug, Clone)]
pub struct OidcKey {
    pub kid: String,
    pub alg: String,
    /// The private key, sealed with the data-dir key.
    pub sealed: String,
    /// The public JWK (JSON text).
    pub public_jwk: String,
    pub created: DateTime<Utc>,
    pub activates: DateTime<Utc>,
    pub retires: Option<DateTime<Utc>>,
}

fn key_from_row(r: &AnyRow) -> Result<OidcKey> {
    Ok(OidcKey {
        kid: get_text(r, "kid")?,
        alg: get_text(r, "alg")?,
        sealed: get_text(r, "sealed")?,
        public_jwk: get_text(r, "public_jwk")?,
        created: parse_time(&get_text(r, "created")?)?,
        activates: parse_time(&get_text(r, "activates")?)?,
        retires: get_opt_text(r, "retires")?.map(|t| parse_time(&t)).transpose()?,
    })
}

/// An authorization code or a token as stored: whose, for which application, and the
/// request's details (`data`, JSON: scope, nonce, redirect URI, PKCE challenge, auth time).
#[derive(Debug, Clone)]
pub struct OidcGrant {
    pub hash: String,
    /// `code`, `access` or `refresh`.
    pub kind: String,
    pub family: String,
    pub app_id: String,
    pub user_id: String,
    pub data: serde_json::Value,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// A code's redemption, a refresh token's exchange.
    pub used: Option<DateTime<Utc>>,
}

fn data_of(r: &AnyRow) -> Result<serde_json::Value> {
    serde_json::from_str(&get_text(r, "data")?).map_err(|e| StoreError::Corrupt(format!("oidc data: {e}")))
}

fn token_from_row(r: &AnyRow) -> Result<OidcGrant> {
    Ok(OidcGrant {
        hash: get_text(r, "token_hash")?,
        kind: get_text(r, "kind")?,
        family: get_text(r, "family")?,
        app_id: get_text(r, "app_id")?,
        user_id: get_text(r, "user_id")?,
        data: data_of(r)?,
        created: parse_time(&get_text(r, "created")?)?,
        expires: parse_time(&get_text(r, "expires")?)?,
        used: get_opt_text(r, "rotated")?.map(|t| parse_time(&t)).transpose()?,
    })
}

fn code_from_row(r: &AnyRow) -> Result<OidcGrant> {
    Ok(OidcGrant {
        hash: get_text(r, "code_hash")?,
        kind: "code".into(),
        family: get_text(r, "family")?,
        app_id: get_text(r, "app_id")?,
        user_id: get_text(r, "user_id")?,
        data: data_of(r)?,
        created: parse_time(&get_text(r, "created")?)?,
        expires: parse_time(&get_text(r, "expires")?)?,
        used: get_opt_text(r, "used")?.map(|t| parse_time(&t)).transpose()?,
    })
}

/// Granted through an association of the user or of one of its groups (`$1` the user
/// column, `$2` the application column), as [`Db::granted`] asks it.
fn granted_sql(user: &str, app: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM associations WHERE from_type = 'user' AND from_id = {user} \
            AND to_type = 'application' AND to_id = {app}) \
         OR EXISTS (SELECT 1 FROM group_members m JOIN associations a ON a.from_type = 'user_group' \
            AND a.from_id = m.group_id AND a.to_type = 'application' AND a.to_id = {app} WHERE m.user_id = {user}))"
    )
}

impl Db<'_> {
    // ---- applications ---------------------------------------------------------------------

    pub async fn insert_application(&mut self, a: &Application) -> Result<()> {
        sqlx::query(
            "INSERT INTO applications (id, name, client_id, secret_hash, settings, created) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(a.id.clone())
        .bind(a.name.clone())
        .bind(a.client_id.clone())
        .bind(a.secret_hash.clone())
        .bind(serde_json::to_string(&a.settings).expect("settings serialize"))
        .bind(time_text(a.created))
        .execute(&mut *self.c)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    /// Writes the name, settings and secret hash.
    pub async fn update_application(&mut self, a: &Application) -> Result<()> {
        sqlx::query("UPDATE applications SET name = $2, secret_hash = $3, settings = $4 WHERE id = $1")
            .bind(a.id.clone())
            .bind(a.name.clone())
            .bind(a.secret_hash.clone())
            .bind(serde_json::to_string(&a.settings).expect("settings serialize"))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    pub async fn get_application(&mut self, id: &str) -> Result<Option<Application>> {
        let row = sqlx::query("SELECT * FROM applications WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| app_from_row(&r)).transpose()
    }

    /// The application, its row locked until the transaction ends (PostgreSQL).
    pub async fn lock_application(&mut self, id: &str) -> Result<Option<Application>> {
        let sql = format!("SELECT * FROM applications WHERE id = $1{}", for_update(self.b));
        let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| app_from_row(&r)).transpose()
    }

    pub async fn application_by_client_id(&mut self, client_id: &str) -> Result<Option<Application>> {
        let row = sqlx::query("SELECT * FROM applications WHERE client_id = $1")
            .bind(client_id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| app_from_row(&r)).transpose()
    }

    /// A page of applications by name, and how many there are.
    pub async fn list_applications(&mut self, limit: i64, skip: i64) -> Result<(i64, Vec<Application>)> {
        let total = rows::get_i64(&sqlx::query("SELECT COUNT(*) FROM applications").fetch_one(&mut *self.c).await?, 0)?;
        let rows = sqlx::query("SELECT * FROM applications ORDER BY name, id LIMIT $1 OFFSET $2")
            .bind(limit)
            .bind(skip)
            .fetch_all(&mut *self.c)
            .await?;
        Ok((total, rows.iter().map(app_from_row).collect::<Result<_>>()?))
    }

    /// The applications a user reaches (directly or through a group), by name.
    pub async fn applications_of_user(&mut self, user_id: &str) -> Result<Vec<Application>> {
        let sql = format!("SELECT * FROM applications p WHERE {} ORDER BY name, id", granted_sql("$1", "p.id"));
        let rows = sqlx::query(&sql).bind(user_id.to_string()).fetch_all(&mut *self.c).await?;
        rows.iter().map(app_from_row).collect()
    }

    /// Deletes the application with its associations, codes and tokens; false when there
    /// was none.
    pub async fn delete_application(&mut self, id: &str) -> Result<bool> {
        let r =
            sqlx::query("DELETE FROM applications WHERE id = $1").bind(id.to_string()).execute(&mut *self.c).await?;
        self.revoke_oidc_of_application(id).await?;
        self.remove_resource_associations(&ResourceRef::new(ResourceKind::Application, id.to_string())).await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes every code and token of an application (deactivated).
    pub async fn revoke_oidc_of_application(&mut self, id: &str) -> Result<()> {
        for sql in ["DELETE FROM oidc_codes WHERE app_id = $1", "DELETE FROM oidc_tokens WHERE app_id = $1"] {
            sqlx::query(sql).bind(id.to_string()).execute(&mut *self.c).await?;
        }
        Ok(())
    }

    /// Holds an application against deletion while an association to it is written.
    pub async fn application_name_held(&mut self, id: &str) -> Result<Option<String>> {
        let hold = match self.b {
            crate::Backend::Postgres => " FOR KEY SHARE",
            crate::Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!("SELECT name FROM applications WHERE id = $1{hold}"))
            .bind(id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| get_text(&r, "name")).transpose()
    }

    // ---- signing keys ---------------------------------------------------------------------

    pub async fn insert_oidc_key(&mut self, k: &OidcKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO oidc_keys (kid, alg, sealed, public_jwk, created, activates, retires) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(k.kid.clone())
        .bind(k.alg.clone())
        .bind(k.sealed.clone())
        .bind(k.public_jwk.clone())
        .bind(time_text(k.created))
        .bind(time_text(k.activates))
        .bind(k.retires.map(time_text))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// Every stored key, oldest first.
    pub async fn oidc_keys(&mut self) -> Result<Vec<OidcKey>> {
        let rows = sqlx::query("SELECT * FROM oidc_keys ORDER BY activates, kid").fetch_all(&mut *self.c).await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Sets when the keys of `alg` other than `keep` that have no end yet stop being
    /// published.
    pub async fn retire_oidc_keys(&mut self, alg: &str, keep: &str, retires: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE oidc_keys SET retires = $3 WHERE alg = $1 AND kid <> $2 AND retires IS NULL")
            .bind(alg.to_string())
            .bind(keep.to_string())
            .bind(time_text(retires))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    pub async fn drop_retired_oidc_keys(&mut self, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("DELETE FROM oidc_keys WHERE retires IS NOT NULL AND retires <= $1")
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    /// Serializes key creation across processes (PostgreSQL); a no-op on SQLite, whose
    /// writer is single.
    pub async fn lock_oidc_keys(&mut self) -> Result<()> {
        if self.b == crate::Backend::Postgres {
            sqlx::query("LOCK TABLE oidc_keys IN SHARE ROW EXCLUSIVE MODE").execute(&mut *self.c).await?;
        }
        Ok(())
    }

    // ---- codes ----------------------------------------------------------------------------

    /// Stores a code; expired codes (of everyone) go first, so the table stays small.
    pub async fn put_oidc_code(&mut self, g: &OidcGrant, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("DELETE FROM oidc_codes WHERE expires <= $1").bind(time_text(now)).execute(&mut *self.c).await?;
        sqlx::query(
            "INSERT INTO oidc_codes (code_hash, app_id, user_id, data, family, created, expires) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(g.hash.clone())
        .bind(g.app_id.clone())
        .bind(g.user_id.clone())
        .bind(g.data.to_string())
        .bind(g.family.clone())
        .bind(time_text(g.created))
        .bind(time_text(g.expires))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// The code; with `lock`, its row locked until the transaction ends (so two redemptions
    /// racing on PostgreSQL see each other).
    pub async fn oidc_code(&mut self, hash: &str, lock: bool) -> Result<Option<OidcGrant>> {
        let hold = if lock { for_update(self.b) } else { "" };
        let sql = format!("SELECT * FROM oidc_codes WHERE code_hash = $1{hold}");
        let row = sqlx::query(&sql).bind(hash.to_string()).fetch_optional(&mut *self.c).await?;
        row.map(|r| code_from_row(&r)).transpose()
    }

    /// Marks a code redeemed; false when it already was (a concurrent redemption won).
    pub async fn use_oidc_code(&mut self, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query("UPDATE oidc_codes SET used = $2 WHERE code_hash = $1 AND used IS NULL")
            .bind(hash.to_string())
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- tokens ---------------------------------------------------------------------------

    /// Stores a token; expired tokens (of everyone) go first.
    pub async fn put_oidc_token(&mut self, g: &OidcGrant, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("DELETE FROM oidc_tokens WHERE expires <= $1").bind(time_text(now)).execute(&mut *self.c).await?;
        sqlx::query(
            "INSERT INTO oidc_tokens (token_hash, kind, family, app_id, user_id, data, created, expires) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(g.hash.clone())
        .bind(g.kind.clone())
        .bind(g.family.clone())
        .bind(g.app_id.clone())
        .bind(g.user_id.clone())
        .bind(g.data.to_string())
        .bind(time_text(g.created))
        .bind(time_text(g.expires))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// The unexpired token with this hash.
    pub async fn oidc_token(&mut self, hash: &str, now: DateTime<Utc>) -> Result<Option<OidcGrant>> {
        let row = sqlx::query("SELECT * FROM oidc_tokens WHERE token_hash = $1 AND expires > $2")
            .bind(hash.to_string())
            .bind(time_text(now))
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| token_from_row(&r)).transpose()
    }

    /// Marks a refresh token exchanged; false when it already was (its reuse, or a
    /// concurrent exchange that won). Atomic, so two exchanges never both succeed.
    pub async fn rotate_oidc_token(&mut self, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query("UPDATE oidc_tokens SET rotated = $2 WHERE token_hash = $1 AND rotated IS NULL")
            .bind(hash.to_string())
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes one token; the number deleted.
    pub async fn revoke_oidc_token(&mut self, hash: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM oidc_tokens WHERE token_hash = $1")
            .bind(hash.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected())
    }

    /// Deletes every token of a family; the number deleted.
    pub async fn revoke_oidc_family(&mut self, family: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM oidc_tokens WHERE family = $1")
            .bind(family.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected())
    }

    /// Ends the oldest families of a user at an application beyond `keep - 1`, before a new
    /// one starts.
    pub async fn trim_oidc_families(&mut self, user_id: &str, app_id: &str, keep: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM oidc_tokens WHERE user_id = $1 AND app_id = $2 AND family NOT IN \
             (SELECT family FROM oidc_tokens WHERE user_id = $1 AND app_id = $2 \
              GROUP BY family ORDER BY MAX(created) DESC, family DESC LIMIT $3)",
        )
        .bind(user_id.to_string())
        .bind(app_id.to_string())
        .bind((keep - 1).max(0))
        .execute(&mut *self.c)
        .await?;
        Ok(())
    }

    /// Deletes every code and token of a user (suspension, lock, password change, deletion);
    /// the number deleted.
    pub async fn revoke_oidc_of_user(&mut self, user_id: &str) -> Result<u64> {
        let mut n = 0;
        for sql in ["DELETE FROM oidc_codes WHERE user_id = $1", "DELETE FROM oidc_tokens WHERE user_id = $1"] {
            n += sqlx::query(sql).bind(user_id.to_string()).execute(&mut *self.c).await?.rows_affected();
        }
        Ok(n)
    }

    /// Deletes the tokens whose user no longer reaches their application (an association or
    /// a group membership went), of one user or one application when given; the users whose
    /// tokens went.
    pub async fn revoke_ungranted_oidc(&mut self, user: Option<&str>, app: Option<&str>) -> Result<Vec<String>> {
        let sql = format!(
            "DELETE FROM oidc_tokens AS t WHERE ($1 = '' OR t.user_id = $1) AND ($2 = '' OR t.app_id = $2) \
             AND NOT {} RETURNING user_id",
            granted_sql("t.user_id", "t.app_id")
        );
        let rows = sqlx::query(&sql)
            .bind(user.unwrap_or_default().to_string())
            .bind(app.unwrap_or_default().to_string())
            .fetch_all(&mut *self.c)
            .await?;
        let mut users: Vec<String> = rows.iter().map(|r| get_text(r, "user_id")).collect::<Result<_>>()?;
        users.sort();
        users.dedup();
        Ok(users)
    }

    pub async fn count_oidc_tokens(&mut self, user_id: &str) -> Result<i64> {
        rows::get_i64(
            &sqlx::query("SELECT COUNT(*) FROM oidc_tokens WHERE user_id = $1")
                .bind(user_id.to_string())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )
    }
}
