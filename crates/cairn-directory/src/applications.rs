//! Applications (§2.2, §4.1): OpenID Connect relying parties, resources of the graph. A
//! confidential client's secret is shown once (at creation and at each rotation) and stored
//! as its SHA-256, and checked only by `authenticate` (`Credential::ClientSecret` with
//! protocol `oidc`).

use cairn_domain::application::{parse_input, Application};
use cairn_domain::graph::{ResourceKind, ResourceRef};
use cairn_domain::Secret;
use cairn_store::Db;
use rand::RngCore;
use serde_json::json;

use crate::error::{Error, Result};
use crate::keys::hash_key;
use crate::tokens::random_token;
use crate::{json_changes, Ctx, Directory};

/// An application as created or rotated: the client secret (none for a public client) is
/// shown this once.
pub struct NewApplication {
    pub application: Application,
    pub secret: Option<Secret>,
}

fn no_such(id: &str) -> Error {
    Error::NotFound(format!("no application with id '{id}'"))
}

fn new_secret() -> (Secret, String) {
    let s = format!("cairn_cs_{}", random_token());
    let h = hash_key(&s);
    (Secret::new(s), h)
}

pub(crate) fn app_ref(id: &str) -> ResourceRef {
    ResourceRef::new(ResourceKind::Application, id.to_string())
}

impl Directory {
    pub async fn create_application(&self, ctx: &Ctx, body: &serde_json::Value) -> Result<NewApplication> {
        let (name, settings) = parse_input(body, None)?;
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        let (secret, secret_hash) = match settings.public {
            true => (None, None),
            false => {
                let (s, h) = new_secret();
                (Some(s), Some(h))
            }
        };
        let app = Application {
            id: self.new_id(),
            name,
            client_id: hex::encode(b),
            secret_hash,
            created: self.now(),
            settings,
        };
        let mut tx = self.store().begin().await?;
        tx.db().insert_application(&app).await?;
        let detail = json!({ "client_id": app.client_id, "public": app.settings.public });
        let ev = self.event(ctx, "application_create", Some(("application", &app.id, &app.name)), vec![], detail);
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(NewApplication { application: app, secret })
    }

    pub async fn list_applications(&self, limit: i64, skip: i64) -> Result<(i64, Vec<Application>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().list_applications(limit, skip).await?)
    }

    pub async fn application(&self, id: &str) -> Result<Application> {
        let mut c = self.store().read().await?;
        c.db().get_application(id).await?.ok_or_else(|| no_such(id))
    }

    /// The application of an OAuth `client_id`, if any.
    pub async fn application_by_client_id(&self, client_id: &str) -> Result<Option<Application>> {
        if client_id.is_empty() || client_id.len() > 64 || client_id.contains('\0') {
            return Ok(None);
        }
        let mut c = self.store().read().await?;
        Ok(c.db().application_by_client_id(client_id).await?)
    }

    /// Changes the fields the body sends; one event with what changed. A client's kind
    /// (public or confidential) is fixed at creation: its secret depends on it.
    pub async fn update_application(&self, ctx: &Ctx, id: &str, body: &serde_json::Value) -> Result<Application> {
        let mut tx = self.store().begin().await?;
        let old = tx.db().lock_application(id).await?.ok_or_else(|| no_such(id))?;
        let (name, settings) = parse_input(body, Some((&old.name, &old.settings)))?;
        if settings.public != old.settings.public {
            return Err(Error::invalid(
                "public",
                "a client's kind cannot change (its secret depends on it): create a new application",
            ));
        }
        let new = Application { name, settings, ..old.clone() };
        let before = json!({ "name": old.name, "settings": old.settings });
        let after = json!({ "name": new.name, "settings": new.settings });
        let changes = json_changes("application", &before, &after);
        if !changes.is_empty() {
            tx.db().update_application(&new).await?;
            let ev = self.event(ctx, "application_update", Some(("application", id, &new.name)), changes, json!({}));
            tx.db().insert_event(&ev).await?;
            // Fewer redirect URIs or grant types change nothing already issued; deactivation
            // ends what the application holds.
            if old.settings.active && !new.settings.active {
                self.end_application_tokens(&mut tx.db(), id).await?;
            }
            tx.commit().await?;
        }
        Ok(new)
    }

    /// A new client secret, shown once; the old one stops working at once.
    pub async fn rotate_application_secret(&self, ctx: &Ctx, id: &str) -> Result<NewApplication> {
        let mut tx = self.store().begin().await?;
        let old = tx.db().lock_application(id).await?.ok_or_else(|| no_such(id))?;
        if old.settings.public {
            return Err(Error::Conflict("a public client has no secret to rotate".into()));
        }
        let (secret, hash) = new_secret();
        let app = Application { secret_hash: Some(hash), ..old };
        tx.db().update_application(&app).await?;
        let ev = self.event(ctx, "application_secret_rotate", Some(("application", id, &app.name)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(NewApplication { application: app, secret: Some(secret) })
    }

    /// Deletes the application with its associations, codes and tokens.
    pub async fn delete_application(&self, ctx: &Ctx, id: &str) -> Result<Application> {
        let mut tx = self.store().begin().await?;
        let app = tx.db().lock_application(id).await?.ok_or_else(|| no_such(id))?;
        tx.db().delete_application(id).await?;
        let ev = self.event(ctx, "application_delete", Some(("application", id, &app.name)), vec![], json!({}));
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// The applications a user may open (the user portal's list): associated directly or
    /// through a group, and active.
    pub async fn applications_of_user(&self, user_id: &str) -> Result<Vec<Application>> {
        let mut c = self.store().read().await?;
        Ok(c.db().applications_of_user(user_id).await?.into_iter().filter(|a| a.settings.active).collect())
    }

    async fn end_application_tokens(&self, db: &mut Db<'_>, id: &str) -> Result<()> {
        db.revoke_oidc_of_application(id).await?;
        Ok(())
    }
}
