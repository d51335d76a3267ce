//! Service accounts (OAuth 2.0 client credentials) and their access tokens, both stored as
//! hashes of their secrets.

use cairn_domain::oauth::ServiceAccount;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use crate::rows::{self, get_opt_text, get_text, parse_time};
use crate::{map_unique, time_text, Db, Result};

fn account_from_row(r: &AnyRow) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: get_text(r, "id")?,
        name: get_text(r, "name")?,
        role: rows::role(r)?,
        client_id: get_text(r, "client_id")?,
        secret_hash: get_text(r, "secret_hash")?,
        created: parse_time(&get_text(r, "created")?)?,
        created_by: get_opt_text(r, "created_by")?,
        last_used: get_opt_text(r, "last_used")?.map(|t| parse_time(&t)).transpose()?,
    })
}

impl Db<'_> {
    pub async fn insert_service_account(&mut self, a: &ServiceAccount) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_accounts (id, name, role, client_id, secret_hash, created, created_by, last_used) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(a.id.clone())
        .bind(a.name.clone())
        .bind(a.role.as_str())
        .bind(a.client_id.clone())
        .bind(a.secret_hash.clone())
        .bind(time_text(a.created))
        .bind(a.created_by.clone())
        .bind(a.last_used.map(time_text))
        .execute(&mut *self.c)
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub async fn list_service_accounts(&mut self) -> Result<Vec<ServiceAccount>> {
        let rows = sqlx::query("SELECT * FROM service_accounts ORDER BY id").fetch_all(&mut *self.c).await?;
        rows.iter().map(account_from_row).collect()
    }

    pub async fn get_service_account(&mut self, id: &str) -> Result<Option<ServiceAccount>> {
        let row = sqlx::query("SELECT * FROM service_accounts WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| account_from_row(&r)).transpose()
    }

    pub async fn service_account_by_client_id(&mut self, client_id: &str) -> Result<Option<ServiceAccount>> {
        let row = sqlx::query("SELECT * FROM service_accounts WHERE client_id = $1")
            .bind(client_id.to_string())
            .fetch_optional(&mut *self.c)
            .await?;
        row.map(|r| account_from_row(&r)).transpose()
    }

    /// Deletes the account and every token it holds; false when there was none.
    pub async fn delete_service_account(&mut self, id: &str) -> Result<bool> {
        sqlx::query("DELETE FROM service_tokens WHERE account_id = $1")
            .bind(id.to_string())
            .execute(&mut *self.c)
            .await?;
        let r = sqlx::query("DELETE FROM service_accounts WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *self.c)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn touch_service_account(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE service_accounts SET last_used = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    /// Stores a new token of `account_id`; drops expired tokens (of every account) and this
    /// account's oldest beyond `keep` live ones, so the table stays bounded.
    pub async fn put_service_token(
        &mut self,
        token_hash: &str,
        account_id: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
        keep: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM service_tokens WHERE expires <= $1")
            .bind(time_text(now))
            .execute(&mut *self.c)
            .await?;
        sqlx::query(
            "DELETE FROM service_tokens WHERE account_id = $1 AND token_hash NOT IN \
             (SELECT token_hash FROM service_tokens WHERE account_id = $1 ORDER BY created DESC, token_hash DESC LIMIT $2)",
        )
        .bind(account_id.to_string())
        .bind((keep - 1).max(0))
        .execute(&mut *self.c)
        .await?;
        sqlx::query("INSERT INTO service_tokens (token_hash, account_id, created, expires) VALUES ($1, $2, $3, $4)")
            .bind(token_hash.to_string())
            .bind(account_id.to_string())
            .bind(time_text(now))
            .bind(time_text(expires))
            .execute(&mut *self.c)
            .await?;
        Ok(())
    }

    /// The account a live token belongs to.
    pub async fn service_token_account(
        &mut self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ServiceAccount>> {
        let row = sqlx::query(
            "SELECT a.* FROM service_tokens t JOIN service_accounts a ON a.id = t.account_id \
             WHERE t.token_hash = $1 AND t.expires > $2",
        )
        .bind(token_hash.to_string())
        .bind(time_text(now))
        .fetch_optional(&mut *self.c)
        .await?;
        row.map(|r| account_from_row(&r)).transpose()
    }

    pub async fn count_service_tokens(&mut self, account_id: &str) -> Result<i64> {
        rows::get_i64(
            &sqlx::query("SELECT COUNT(*) FROM service_tokens WHERE account_id = $1")
                .bind(account_id.to_string())
                .fetch_one(&mut *self.c)
                .await?,
            0,
        )
    }
}
