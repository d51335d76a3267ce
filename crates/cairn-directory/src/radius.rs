//! RADIUS servers (§11): JumpCloud's `/api/radiusservers` use cases, the table the RADIUS
//! listener finds a request's server in, and what a server asks of a sign-in beyond the grant
//! (read by `authenticate`).

use std::sync::atomic::Ordering;

use cairn_domain::graph::{ResourceKind, ResourceRef};
use cairn_domain::id::is_object_id;
use cairn_domain::radius::{self, RadiusAction, RadiusInput, RadiusMfa, RadiusServer, Source};
use cairn_domain::Secret;
use cairn_store::Db;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::{Ctx, Directory};

/// The most RADIUS servers an organization may have: each is a row the listener keeps in
/// memory and checks every request's source against.
pub const MAX_RADIUS_SERVERS: i64 = 1000;

/// What a resource asks of a sign-in beyond its grant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ResourceRules {
    /// When the resource asks for a second factor (`None`: only when the user's own
    /// setting does).
    pub mfa: Option<RadiusMfa>,
    /// A locked account with the right password gets in.
    pub allow_locked: bool,
    /// An expired password gets in.
    pub allow_expired: bool,
}

pub(crate) async fn resource_rules(db: &mut Db<'_>, resource: Option<&ResourceRef>) -> Result<ResourceRules> {
    let Some(r) = resource.filter(|r| r.kind == ResourceKind::RadiusServer) else {
        return Ok(ResourceRules::default());
    };
    Ok(match db.get_radius_server(&r.id, false).await? {
        Some(s) => ResourceRules {
            mfa: Some(s.mfa),
            allow_locked: s.user_lockout_action == RadiusAction::Maintain,
            allow_expired: s.user_password_expiration_action == RadiusAction::Maintain,
        },
        None => ResourceRules::default(),
    })
}

/// A server as the listener needs it: the secret opened.
#[derive(Debug, Clone)]
pub struct RadiusClient {
    pub id: String,
    pub name: String,
    pub source: Source,
    pub secret: Secret,
    pub mfa: RadiusMfa,
    pub user_password_enabled: bool,
}

impl RadiusClient {
    pub fn resource(&self) -> ResourceRef {
        ResourceRef::new(ResourceKind::RadiusServer, self.id.clone())
    }
}

/// Where the servers' table stood when read: this process's writes of it, other processes'
/// changes (PostgreSQL notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RadiusStamp(u64, u64);

fn no_such(id: &str) -> Error {
    Error::NotFound(format!("no RADIUS server with id '{id}'"))
}

/// A new shared secret: 32 characters from a 62-letter alphabet (190 bits), which every NAS
/// accepts (some refuse punctuation).
pub fn generate_shared_secret() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}

impl Directory {
    /// JumpCloud's `radiusserverput` JSON of a server (no secret).
    pub async fn radius_server_json(&self, s: &RadiusServer) -> Result<Value> {
        Ok(radius::server_json(s, &self.organization_id().await?))
    }

    /// `GET /api/radiusservers`: oldest first, and how many in all.
    pub async fn radius_servers(&self, limit: i64, skip: i64) -> Result<(i64, Vec<RadiusServer>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().radius_servers(limit, skip).await?)
    }

    pub async fn radius_server(&self, id: &str) -> Result<RadiusServer> {
        if !is_object_id(id) {
            return Err(no_such(id));
        }
        let mut c = self.store().read().await?;
        c.db().get_radius_server(id, false).await?.ok_or_else(|| no_such(id))
    }

    /// `POST /api/radiusservers`: `name`, `networkSourceIp` and `sharedSecret` required; a
    /// source overlapping another server's is a conflict naming it. One transaction with its
    /// event (which never holds the secret).
    pub async fn create_radius_server(&self, ctx: &Ctx, body: &Value) -> Result<RadiusServer> {
        let input = radius::parse_input(body, None).map_err(Error::Invalid)?;
        let key = self.secret_key()?;
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        db.lock_radius_servers().await?;
        let (count, _) = db.radius_servers(0, 0).await?;
        if count >= MAX_RADIUS_SERVERS {
            return Err(Error::Conflict(format!("an organization has at most {MAX_RADIUS_SERVERS} RADIUS servers")));
        }
        let (Some(name), Some(source), Some(secret)) = (input.name.clone(), input.source, input.shared_secret.clone())
        else {
            return Err(Error::Internal("a validated body lacks a required field".into()));
        };
        let s = RadiusServer {
            id: self.new_id(),
            name,
            source,
            sealed_secret: crate::secretbox::seal(key, secret.as_bytes()),
            mfa: input.mfa.unwrap_or_default(),
            user_lockout_action: input.user_lockout_action.unwrap_or_default(),
            user_password_expiration_action: input.user_password_expiration_action.unwrap_or_default(),
            user_password_enabled: input.user_password_enabled.unwrap_or(true),
            created: self.now(),
        };
        refuse_overlap(&mut db, &s).await?;
        db.insert_radius_server(&s).await?;
        let org = self.organization_id().await?;
        let ev = self.event(
            ctx,
            "radiusserver_create",
            Some(("radius_server", &s.id, &s.name)),
            vec![],
            json!({ "server": radius::server_json(&s, &org) }),
        );
        db.insert_event(&ev).await?;
        tx.commit().await?;
        self.inner.radius_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(s)
    }

    /// `PUT /api/radiusservers/{id}`: the fields given change, the others keep their value
    /// (a new `sharedSecret` replaces the old at once). One transaction with its event.
    pub async fn update_radius_server(&self, ctx: &Ctx, id: &str, body: &Value) -> Result<RadiusServer> {
        if !is_object_id(id) {
            return Err(no_such(id));
        }
        let input: RadiusInput = radius::parse_input(body, Some(id)).map_err(Error::Invalid)?;
        let key = self.secret_key()?;
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        db.lock_radius_servers().await?;
        let old = db.get_radius_server(id, true).await?.ok_or_else(|| no_such(id))?;
        let mut new = old.clone();
        if let Some(n) = input.name {
            new.name = n;
        }
        if let Some(src) = input.source {
            new.source = src;
        }
        let secret_changed = match input.shared_secret {
            Some(secret) => {
                let same = crate::secretbox::open(key, &old.sealed_secret)? == secret.as_bytes();
                if !same {
                    new.sealed_secret = crate::secretbox::seal(key, secret.as_bytes());
                }
                !same
            }
            None => false,
        };
        new.mfa = input.mfa.unwrap_or(new.mfa);
        new.user_lockout_action = input.user_lockout_action.unwrap_or(new.user_lockout_action);
        new.user_password_expiration_action =
            input.user_password_expiration_action.unwrap_or(new.user_password_expiration_action);
        new.user_password_enabled = input.user_password_enabled.unwrap_or(new.user_password_enabled);
        if new == old {
            return Ok(old);
        }
        if new.source != old.source {
            refuse_overlap(&mut db, &new).await?;
        }
        db.update_radius_server(&new).await?;
        let org = self.organization_id().await?;
        let mut changes =
            crate::json_changes("radiusserver", &radius::server_json(&old, &org), &radius::server_json(&new, &org));
        if secret_changed {
            // That it changed, never what it is.
            changes.push(cairn_domain::user::Change {
                field: "radiusserver.sharedSecret".into(),
                old: json!("(hidden)"),
                new: json!("(changed)"),
            });
        }
        let ev = self.event(ctx, "radiusserver_update", Some(("radius_server", id, &new.name)), changes, json!({}));
        db.insert_event(&ev).await?;
        tx.commit().await?;
        self.inner.radius_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(new)
    }

    /// `DELETE /api/radiusservers/{id}`: the server and its associations, with its event.
    pub async fn delete_radius_server(&self, ctx: &Ctx, id: &str) -> Result<RadiusServer> {
        if !is_object_id(id) {
            return Err(no_such(id));
        }
        let mut tx = self.store().begin().await?;
        let mut db = tx.db();
        let old = db.get_radius_server(id, true).await?.ok_or_else(|| no_such(id))?;
        let grants = db.remove_resource_associations(&ResourceRef::new(ResourceKind::RadiusServer, id)).await?;
        db.delete_radius_server(id).await?;
        let ev = self.event(
            ctx,
            "radiusserver_delete",
            Some(("radius_server", id, &old.name)),
            vec![],
            json!({ "associations_removed": grants }),
        );
        db.insert_event(&ev).await?;
        tx.commit().await?;
        self.inner.radius_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(old)
    }

    /// Whether the servers may have changed since `stamp` was taken: one atomic read each,
    /// cheap enough for every request.
    pub fn radius_stamp(&self) -> RadiusStamp {
        RadiusStamp(self.inner.radius_epoch.load(Ordering::Acquire), self.store().external_changes())
    }

    /// Every server with its secret opened, for the listener, and the stamp to compare later
    /// (taken first, so a change committed during the read is read again).
    pub async fn radius_clients(&self) -> Result<(RadiusStamp, Vec<RadiusClient>)> {
        let stamp = self.radius_stamp();
        let (_, servers) = self.radius_servers(MAX_RADIUS_SERVERS, 0).await?;
        let key = self.secret_key()?;
        let mut out = Vec::with_capacity(servers.len());
        for s in servers {
            let secret = String::from_utf8(crate::secretbox::open(key, &s.sealed_secret)?)
                .map_err(|_| Error::Internal(format!("the shared secret of RADIUS server {} is not text", s.id)))?;
            out.push(RadiusClient {
                id: s.id,
                name: s.name,
                source: s.source,
                secret: Secret::new(secret),
                mfa: s.mfa,
                user_password_enabled: s.user_password_enabled,
            });
        }
        Ok((stamp, out))
    }
}

/// A conflict naming the server whose source overlaps `s`'s (the table is locked).
async fn refuse_overlap(db: &mut Db<'_>, s: &RadiusServer) -> Result<()> {
    let (_, all) = db.radius_servers(MAX_RADIUS_SERVERS + 1, 0).await?;
    if let Some(o) = all.iter().find(|o| o.id != s.id && o.source.overlaps(&s.source)) {
        return Err(Error::Conflict(format!(
            "networkSourceIp {} overlaps {} of RADIUS server '{}' ({}): a request's source must name one server",
            s.source, o.source, o.name, o.id
        )));
    }
    Ok(())
}
