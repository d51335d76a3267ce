//! Cairn's use cases. Every change is one method that checks the domain rules and writes the
//! change and its audit event in one transaction; every front end (REST, portals, SCIM, CSV,
//! the scheduler) calls these methods and nothing else.

mod actions;
mod admins;
mod applications;
mod auth;
mod clock;
mod config;
mod counts;
pub use counts::EXACT_COUNT_UP_TO;
mod credentials;
mod dirsync;
mod error;
mod export;
mod grants;
mod groups;
mod import;
mod keys;
mod lifecycle;
mod load;
mod mailer;
mod oidc;
mod outbox;
mod password;
mod radius;
mod scheduler;
mod scim;
mod secretbox;
mod service;
mod tokens;
mod tree;
mod upload;
mod users;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_domain::id::format_object_id;
use cairn_domain::throttle::Throttle;
use cairn_domain::user::Change;
use cairn_domain::{Actor, Event, EventQuery, OrgSettings};
use cairn_store::{Db, Store};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::{json, Value};

pub use actions::{Action, ActionResult, Outcome, ACTIONS};
pub use admins::{ADMIN_LOGIN_REFUSED, ADMIN_SESSION_VALIDITY};
pub use applications::NewApplication;
pub use auth::{AuthRequest, Authenticated, Credential, Principal, MAX_LOGIN_CHARS, STEP_VALIDITY};
pub use cairn_domain as domain;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, Smtp, Tls};
pub use credentials::totp_code;
pub use dirsync::{SyncCounts, CONNECT_TIMEOUT, MAX_CONNECTIONS, OP_TIMEOUT};
pub use error::{Error, Refusal, Result, LOGIN_REFUSED, THROTTLED};
pub use export::{defuse, ExportFormat, Exporter, DEFAULT_FIELDS as DEFAULT_EXPORT_FIELDS};
pub use grants::{ldap_server_json, BUILTIN_LDAP_SERVER_NAME};
pub use groups::{group_json, GroupInput};
pub use import::{Counts, ImportOptions, MAX_IMPORT_BYTES};
pub use keys::{Bootstrap, NewApiKey};
pub use lifecycle::StateOutcome;
pub use mailer::scrub as scrub_tokens;
pub use oidc::{
    pkce_matches, pkce_well_formed, CodeRequest, IssuedTokens, OidcRefusal, SessionAccess, TokenInfo,
    ALGORITHMS as OIDC_ALGORITHMS, ID_TOKEN_VALIDITY, PUBLISH_AHEAD,
};
pub use password::{argon2 as argon2_params, Hasher};
pub use radius::{generate_shared_secret, RadiusClient, RadiusStamp, MAX_RADIUS_SERVERS};
pub use scheduler::{parse_instant, parse_user_ids, ScheduleRequest};
pub use scim::{NewScimToken, ScimGroupChange, ScimQuery, ScimUserChange};
pub use service::{ApiCaller, IssuedToken, NewServiceAccount};
pub use tree::{TreeChange, TreeCursor, TreeLoad};
pub use upload::{
    count_entries, ImportSlot, Upload, UploadKind, UploadRefusal, UploadSink, MAX_BULK_BYTES, MAX_BULK_ENTRIES,
};

/// The directory's figures for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub staged: i64,
    pub activated: i64,
    pub suspended: i64,
    pub outbox_depth: i64,
}

/// Who asks, through which interface, from where: recorded on every event.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub actor: Actor,
    /// `manual`, `api`, `bulk_api`, `csv`, `scim`, `ldap`, `radius`, `scheduler`, `portal`, `cli`.
    pub source: String,
    pub client_addr: Option<String>,
}

impl Ctx {
    pub fn new(actor: Actor, source: &str, client_addr: Option<String>) -> Ctx {
        Ctx { actor, source: source.into(), client_addr }
    }
    pub fn cli() -> Ctx {
        Ctx::new(Actor { kind: "system".into(), id: None, name: Some("cli".into()) }, "cli", None)
    }
}

/// The organization: its id and settings.
#[derive(Debug, Clone)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub settings: OrgSettings,
    pub created: DateTime<Utc>,
}

/// Addresses each throttle remembers at most (a few MB whatever a flood's spread).
const THROTTLE_KEYS: usize = 100_000;

#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    /// The organization's id never changes once created: read once, not per request.
    org_id: std::sync::OnceLock<String>,
    store: Store,
    config: config::Config,
    clock: Arc<dyn Clock>,
    hasher: Hasher,
    id_random: [u8; 5],
    id_counter: AtomicU32,
    /// Failed sign-ins per client address (every protocol), and self-service reset requests
    /// per address: per process, which is enough to slow a guesser down (lockout, stored,
    /// protects each account whatever the process).
    sign_in_throttle: Mutex<Throttle<IpAddr>>,
    reset_throttle: Mutex<Throttle<IpAddr>>,
    /// Places for imports and bulk jobs running at once (`Config::max_concurrent_imports`).
    imports: Arc<tokio::sync::Semaphore>,
    /// The built-in LDAP server's id, read once: it is never deleted.
    ldap_server_id: std::sync::OnceLock<String>,
    /// RADIUS server writes by this process, so its listener rereads them at once.
    radius_epoch: AtomicU64,
    /// Other processes' changes are listened for once, whichever front ends ask.
    watching: std::sync::Once,
    /// The OIDC provider's signing keys, opened, and when they were read.
    oidc_keys: Mutex<Option<oidc::KeyCache>>,
    /// Directory connections whose sync runs in this process.
    dirsyncs: Mutex<std::collections::HashMap<String, String>>,
    /// Circuit breakers of delegated binds, per connection.
    breakers: dirsync::Breakers,
    /// Counts of large user lists (see `counts`).
    counts: counts::CountCache,
}

impl Directory {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Directory {
        Directory::with_config(store, clock, config::Config::default())
    }

    pub fn with_config(store: Store, clock: Arc<dyn Clock>, config: config::Config) -> Directory {
        let mut id_random = [0u8; 5];
        rand::thread_rng().fill_bytes(&mut id_random);
        Directory {
            inner: Arc::new(Inner {
                org_id: std::sync::OnceLock::new(),
                store,
                clock,
                hasher: Hasher::new(),
                id_random,
                id_counter: AtomicU32::new(rand::random::<u32>() & 0xff_ffff),
                sign_in_throttle: Mutex::new(Throttle::new(config.sign_in_rate, THROTTLE_KEYS)),
                reset_throttle: Mutex::new(Throttle::new(config.reset_rate, THROTTLE_KEYS)),
                imports: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_imports.max(1))),
                ldap_server_id: std::sync::OnceLock::new(),
                radius_epoch: AtomicU64::new(0),
                watching: std::sync::Once::new(),
                oidc_keys: Mutex::new(None),
                dirsyncs: Mutex::default(),
                breakers: dirsync::Breakers::default(),
                counts: counts::CountCache::default(),
                config,
            }),
        }
    }

    pub fn config(&self) -> &config::Config {
        &self.inner.config
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether the database answers and its schema is current (`/readyz`).
    pub async fn ready(&self) -> Result<bool> {
        Ok(self.store().ready().await?)
    }

    /// Closes the database: the last connection checkpoints SQLite's WAL away.
    pub async fn close(&self) {
        self.store().close().await
    }

    /// What `/metrics` reports of the directory, read from the database at scrape time so
    /// every process of a PostgreSQL cluster reports the same truth.
    pub async fn gauges(&self) -> Result<Gauges> {
        let mut c = self.store().read().await?;
        let by_state = c.db().count_users_by_state().await?;
        let users = |s: &str| by_state.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        Ok(Gauges {
            staged: users("STAGED"),
            activated: users("ACTIVATED"),
            suspended: users("SUSPENDED"),
            // Messages waiting for (or in) delivery.
            outbox_depth: c.db().count_messages("queued").await? + c.db().count_messages("sending").await?,
        })
    }

    /// Whether the configured secrets key opens what is sealed in the database: `None` when
    /// nothing sealed is stored yet. A restore with the wrong key is found here, not at the
    /// first TOTP sign-in.
    pub async fn check_secret_key(&self) -> Result<Option<bool>> {
        let sealed = self.store().read().await?.db().any_sealed_totp().await?;
        Ok(match sealed {
            Some(s) => Some(crate::secretbox::open(self.secret_key()?, &s).is_ok()),
            None => None,
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn hasher(&self) -> &Hasher {
        &self.inner.hasher
    }

    /// A new 24-hex object id, ordered by creation time.
    pub fn new_id(&self) -> String {
        let secs = self.now().timestamp().clamp(0, i64::from(u32::MAX)) as u32;
        let n = self.inner.id_counter.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        format_object_id(secs, self.inner.id_random, n)
    }

    /// Brings the schema up to date and makes sure the one organization and the built-in
    /// LDAP server exist.
    pub async fn migrate(&self) -> Result<()> {
        self.store().migrate().await?;
        let mut tx = self.store().begin().await?;
        // Processes starting together against one PostgreSQL create them once.
        tx.db().lock_setup().await?;
        if tx.db().organization().await?.is_none() {
            let id = self.new_id();
            let settings = OrgSettings::default();
            let body = serde_json::to_string(&settings).expect("settings serialize");
            tx.db().put_organization(&id, &settings.name, &body, self.now()).await?;
        }
        self.ensure_builtin_ldap_server(&mut tx.db()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The organization's id (every user's `organization`), cached after the first read.
    pub async fn organization_id(&self) -> Result<String> {
        if let Some(id) = self.inner.org_id.get() {
            return Ok(id.clone());
        }
        let id = self.organization().await?.id;
        Ok(self.inner.org_id.get_or_init(|| id).clone())
    }

    pub async fn organization(&self) -> Result<Organization> {
        let mut c = self.store().read().await?;
        org_of(&mut c.db()).await
    }

    /// Applies a partial settings document (JumpCloud's `settings` object).
    pub async fn update_settings(&self, ctx: &Ctx, patch: &Value) -> Result<Organization> {
        let mut tx = self.store().begin().await?;
        let org = org_of(&mut tx.db()).await?;
        let settings = org.settings.apply_patch(patch)?;
        let old = serde_json::to_value(&org.settings).expect("settings serialize");
        let new = serde_json::to_value(&settings).expect("settings serialize");
        let changes = json_changes("settings", &old, &new);
        tx.db().put_organization(&org.id, &settings.name, &new.to_string(), org.created).await?;
        if !changes.is_empty() {
            let ev =
                self.event(ctx, "settings_update", Some(("organization", &org.id, &settings.name)), changes, json!({}));
            tx.db().insert_event(&ev).await?;
        }
        tx.commit().await?;
        Ok(Organization { settings, name: org.name.clone(), ..org })
    }

    pub async fn list_events(&self, q: &EventQuery) -> Result<(i64, Vec<Event>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().list_events(q).await?)
    }

    /// Builds an audit event for `ctx`.
    pub(crate) fn event(
        &self,
        ctx: &Ctx,
        action: &str,
        target: Option<(&str, &str, &str)>,
        changes: Vec<Change>,
        detail: Value,
    ) -> Event {
        Event {
            id: self.new_id(),
            time: self.now(),
            actor: ctx.actor.clone(),
            action: action.into(),
            target_kind: target.map(|t| t.0.to_string()),
            target_id: target.map(|t| t.1.to_string()),
            target_name: target.map(|t| t.2.to_string()),
            source: ctx.source.clone(),
            client_addr: ctx.client_addr.clone(),
            outcome: "success".into(),
            changes: serde_json::to_value(changes).expect("changes serialize"),
            detail,
        }
    }
}

pub(crate) async fn org_of(db: &mut Db<'_>) -> Result<Organization> {
    let (id, name, settings, created) = db
        .organization()
        .await?
        .ok_or_else(|| Error::Internal("the organization is missing: run `cairn migrate`".into()))?;
    let settings: OrgSettings =
        serde_json::from_str(&settings).map_err(|e| Error::Internal(format!("stored settings are unreadable: {e}")))?;
    Ok(Organization { id, name, settings, created })
}

/// Leaf-level differences between two JSON documents, as audit changes.
pub(crate) fn json_changes(prefix: &str, old: &Value, new: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                let path = format!("{prefix}.{k}");
                out.extend(json_changes(&path, a.get(k).unwrap_or(&Value::Null), v));
            }
        }
        (a, b) if a != b => out.push(Change { field: prefix.to_string(), old: a.clone(), new: b.clone() }),
        _ => {}
    }
    out
}
