use cairn_domain::password::check_password;
use cairn_domain::user::normalize_email;
use cairn_domain::{Admin, ApiKey, Role, Secret};
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::{Ctx, Directory};

/// A key as shown once at creation.
pub struct NewApiKey {
    pub key: ApiKey,
    pub secret: Secret,
}

/// What the first start created, to be printed once.
#[derive(Debug, Default)]
pub struct Bootstrap {
    pub admin_email: Option<String>,
    pub admin_password: Option<Secret>,
    pub api_key: Option<Secret>,
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn generate_key() -> String {
    let mut b = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut b);
    format!("cairn_{}", hex::encode(b))
}

impl Directory {
    pub async fn create_apikey(&self, ctx: &Ctx, name: &str, role: Role) -> Result<NewApiKey> {
        self.insert_apikey(ctx, name, role, generate_key()).await
    }

    async fn insert_apikey(&self, ctx: &Ctx, name: &str, role: Role, secret: String) -> Result<NewApiKey> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 255 {
            return Err(Error::invalid("name", "must be 1 to 255 characters"));
        }
        if secret.len() < 16 {
            return Err(Error::invalid("key", "must be at least 16 characters"));
        }
        let key = ApiKey {
            id: self.new_id(),
            name: name.to_string(),
            role,
            key_hash: hash_key(&secret),
            prefix: secret.chars().take(10).collect(),
            created: self.now(),
            created_by: ctx.actor.name.clone(),
            last_used: None,
        };
        let mut tx = self.store().begin().await?;
        tx.db().insert_apikey(&key).await?;
        let ev = self.event(
            ctx,
            "apikey_create",
            Some(("apikey", &key.id, &key.name)),
            vec![],
            json!({ "role": role.as_str(), "prefix": key.prefix }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(NewApiKey { key, secret: Secret::new(secret) })
    }

    pub async fn list_apikeys(&self) -> Result<Vec<ApiKey>> {
        let mut c = self.store().read().await?;
        Ok(c.db().list_apikeys().await?)
    }

    pub async fn delete_apikey(&self, ctx: &Ctx, id: &str) -> Result<ApiKey> {
        let mut tx = self.store().begin().await?;
        let key = tx.db().get_apikey(id).await?.ok_or_else(|| Error::NotFound(format!("no API key with id '{id}'")))?;
        tx.db().delete_apikey(id).await?;
        let ev = self.event(ctx, "apikey_delete", Some(("apikey", &key.id, &key.name)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// The key that `presented` is, if any. `last used` is written at most once a minute per
    /// key so that reads stay reads.
    pub async fn authenticate_apikey(&self, presented: &str) -> Result<Option<ApiKey>> {
        let mut c = self.store().read().await?;
        let Some(key) = c.db().apikey_by_hash(&hash_key(presented)).await? else {
            return Ok(None);
        };
        drop(c);
        let now = self.now();
        if key.last_used.is_none_or(|t| (now - t).num_seconds() >= 60) {
            let mut tx = self.store().begin().await?;
            tx.db().touch_apikey(&key.id, now).await?;
            tx.commit_unlogged().await?;
        }
        Ok(Some(key))
    }

    /// Creates a portal administrator; generates a password when none is given.
    pub async fn create_admin(
        &self,
        ctx: &Ctx,
        email: &str,
        password: Option<Secret>,
        role: Role,
    ) -> Result<(Admin, Option<Secret>)> {
        let email = normalize_email(email).map_err(|m| Error::invalid("email", m))?;
        let org = self.organization().await?;
        let (password, generated) = match password {
            Some(p) => {
                check_password(&org.settings.password_policy, p.expose()).map_err(|m| Error::invalid("password", m))?;
                (p, false)
            }
            None => (Secret::new(Alphanumeric.sample_string(&mut rand::thread_rng(), 20)), true),
        };
        let hash = self.hasher().hash(&password).await?;
        let now = self.now();
        let admin =
            Admin { id: self.new_id(), email: email.clone(), password_hash: hash, role, created: now, updated: now };
        let mut tx = self.store().begin().await?;
        if tx.db().admin_by_email(&email).await?.is_some() {
            return Err(Error::Conflict(format!("an administrator with email '{email}' already exists")));
        }
        tx.db().insert_admin(&admin).await?;
        let ev = self.event(
            ctx,
            "admin_create",
            Some(("admin", &admin.id, &admin.email)),
            vec![],
            json!({ "role": role.as_str() }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok((admin, generated.then_some(password)))
    }

    /// First start (§1.2): with `bootstrap_key`, an empty database gets an admin API key with
    /// exactly that value; without it, an empty database gets `admin@localhost` with a
    /// generated password and a generated admin API key. Returns what to print, once.
    pub async fn bootstrap(&self, bootstrap_key: Option<&str>) -> Result<Bootstrap> {
        let mut out = Bootstrap::default();
        let (admins, keys) = {
            let mut c = self.store().read().await?;
            (c.db().count_admins().await?, c.db().count_apikeys().await?)
        };
        let ctx = Ctx::new(cairn_domain::Actor::system(), "system", None);
        match bootstrap_key {
            Some(k) if keys == 0 => {
                self.insert_apikey(&ctx, "bootstrap", Role::Admin, k.to_string()).await?;
            }
            Some(_) => {}
            None if admins == 0 && keys == 0 => {
                let (admin, pw) = self.create_admin(&ctx, "admin@localhost", None, Role::Admin).await?;
                let key = self.create_apikey(&ctx, "bootstrap", Role::Admin).await?;
                out.admin_email = Some(admin.email);
                out.admin_password = pw;
                out.api_key = Some(key.secret);
            }
            None => {}
        }
        Ok(out)
    }
}
