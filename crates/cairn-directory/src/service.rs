//! Service accounts (§2.2, §4.3): OAuth 2.0 client credentials for API automation. The
//! secret is checked by `authenticate` (`Credential::ClientSecret`), like every secret; a
//! granted attempt gets a short-lived bearer token, stored as its hash, that `/api` accepts
//! as an API key of the account's role until it expires or the account is deleted.

use cairn_domain::access::Protocol;
use cairn_domain::oauth::{ServiceAccount, MAX_LIVE_TOKENS, TOKEN_VALIDITY};
use cairn_domain::{Actor, ApiKey, Role, Secret};
use rand::RngCore;
use serde_json::json;

use crate::auth::{Authenticated, Principal};
use crate::error::{Error, Result};
use crate::keys::hash_key;
use crate::tokens::{random_token, token_hash};
use crate::{AuthRequest, Credential, Ctx, Directory};

/// A service account as created: the client secret is shown this once.
pub struct NewServiceAccount {
    pub account: ServiceAccount,
    pub secret: Secret,
}

/// A bearer token as issued by `/oauth2/token`.
pub struct IssuedToken {
    pub token: Secret,
    pub expires_in: i64,
    pub account: ServiceAccount,
}

/// Who calls `/api`: an API key, or a service account through one of its tokens.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    pub actor: Actor,
    pub role: Role,
}

impl Directory {
    pub async fn create_service_account(&self, ctx: &Ctx, name: &str, role: Role) -> Result<NewServiceAccount> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 255 {
            return Err(Error::invalid("name", "must be 1 to 255 characters"));
        }
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        let client_id = hex::encode(b);
        let secret = format!("cairn_cs_{}", random_token());
        let account = ServiceAccount {
            id: self.new_id(),
            name: name.to_string(),
            role,
            client_id,
            secret_hash: hash_key(&secret),
            created: self.now(),
            created_by: ctx.actor.name.clone(),
            last_used: None,
        };
        let mut tx = self.store().begin().await?;
        tx.db().insert_service_account(&account).await?;
        let ev = self.event(
            ctx,
            "service_account_create",
            Some(("service_account", &account.id, &account.name)),
            vec![],
            json!({ "role": role.as_str(), "client_id": account.client_id }),
        );
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(NewServiceAccount { account, secret: Secret::new(secret) })
    }

    pub async fn list_service_accounts(&self) -> Result<Vec<ServiceAccount>> {
        let mut c = self.store().read().await?;
        Ok(c.db().list_service_accounts().await?)
    }

    /// Deletes (revokes) the account: its tokens end in the same transaction.
    pub async fn delete_service_account(&self, ctx: &Ctx, id: &str) -> Result<ServiceAccount> {
        let mut tx = self.store().begin().await?;
        let a = tx
            .db()
            .get_service_account(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no service account with id '{id}'")))?;
        tx.db().delete_service_account(id).await?;
        let ev =
            self.event(ctx, "service_account_delete", Some(("service_account", &a.id, &a.name)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(a)
    }

    /// The client credentials grant: the secret is checked by `authenticate` (throttled per
    /// address, one event per attempt), then a new token is stored as its hash.
    pub async fn issue_client_token(
        &self,
        ctx: &Ctx,
        client_id: &str,
        secret: &Secret,
        client_addr: Option<String>,
    ) -> Result<IssuedToken> {
        let req = AuthRequest {
            protocol: Protocol::OAuth2,
            credential: Credential::ClientSecret { client_id, secret },
            resource: None,
            client_addr,
            device: None,
        };
        let account = match self.authenticate(ctx, req).await? {
            Authenticated::Granted(Principal::Service(a)) => a,
            _ => return Err(Error::Internal("client credentials granted something else".into())),
        };
        let token = format!("cairn_at_{}", random_token());
        let now = self.now();
        let mut tx = self.store().begin().await?;
        tx.db().put_service_token(&token_hash(&token), &account.id, now, now + TOKEN_VALIDITY, MAX_LIVE_TOKENS).await?;
        tx.commit().await?;
        Ok(IssuedToken { token: Secret::new(token), expires_in: TOKEN_VALIDITY.num_seconds(), account })
    }

    /// The caller a presented API credential is: an API key, or a live service-account
    /// token. `last used` is written at most once a minute.
    pub async fn authenticate_api(&self, presented: &str) -> Result<Option<ApiCaller>> {
        if let Some(k) = self.authenticate_apikey(presented).await? {
            let ApiKey { id, name, role, .. } = k;
            return Ok(Some(ApiCaller { actor: Actor::apikey(&id, &name), role }));
        }
        let now = self.now();
        let found = {
            let mut c = self.store().read().await?;
            c.db().service_token_account(&token_hash(presented), now).await?
        };
        let Some(a) = found else { return Ok(None) };
        if a.last_used.is_none_or(|t| (now - t).num_seconds() >= 60) {
            let mut tx = self.store().begin().await?;
            tx.db().touch_service_account(&a.id, now).await?;
            tx.commit_unlogged().await?;
        }
        Ok(Some(ApiCaller { actor: a.actor(), role: a.role }))
    }

    /// Live tokens of an account (tests and the admin portal).
    pub async fn service_token_count(&self, id: &str) -> Result<i64> {
        let mut c = self.store().read().await?;
        Ok(c.db().count_service_tokens(id).await?)
    }
}
